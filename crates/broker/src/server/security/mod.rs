//! Authentication: TLS (`tls`) on SSL and SASL_SSL listeners, SASL (`sasl`: PLAIN with
//! JAAS users, `scram`: SCRAM-SHA-256/512 with stored credentials) on SASL_PLAINTEXT and
//! SASL_SSL listeners, configured with Kafka's keys (`jaas` parses `sasl.jaas.config`).
//!
//! Invariant: a connection's `Conn::principal` is `User:ANONYMOUS` until it
//! authenticates; it is set once, here, before any request other than ApiVersions /
//! SaslHandshake / SaslAuthenticate is served: from SASL on SASL listeners, from the
//! client certificate's DN (through `ssl.principal.mapping.rules`) on SSL listeners.
//!
//! Thread-safe: built once at start; TLS configurations swap on reload, SCRAM
//! credentials change under their own lock.

pub mod jaas;
pub mod oauth;
pub mod quorum;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_client::security::{ClientSecurity, SaslCredentials, SaslMechanism, TlsClientOptions};

use crate::config::{BrokerConfig, ConfigError};

/// Per-listener prefix of Kafka's listener overrides.
const LISTENER_PREFIX: &str = "listener.name.";

/// `ssl.*` keys Runnel reads (also under `listener.name.<l>.`).
const SSL_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.key.password",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.cipher.suites",
    "ssl.principal.mapping.rules",
    "ssl.endpoint.identification.algorithm",
];

/// Accepted for compatibility (JVM-specific), without effect.
const SSL_KEYS_WITHOUT_EFFECT: &[&str] = &[
    "ssl.keystore.password",
    "ssl.truststore.password",
    "ssl.protocol",
    "ssl.provider",
    "ssl.keymanager.algorithm",
    "ssl.trustmanager.algorithm",
    "ssl.secure.random.implementation",
];

/// OAUTHBEARER's keys (also under `listener.name.<l>.`).
const OAUTH_KEYS: &[&str] = &[
    "sasl.oauthbearer.jwks.endpoint.url",
    "sasl.oauthbearer.expected.audience",
    "sasl.oauthbearer.expected.issuer",
    "sasl.oauthbearer.sub.claim.name",
    "sasl.oauthbearer.scope.claim.name",
    "sasl.oauthbearer.clock.skew.seconds",
];

const UNSECURED_HANDLER: &str =
    "org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler";
const JWKS_HANDLER: &str =
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler";

const SASL_KEYS: &[&str] = &[
    "http.authentication.method",
    "http.authentication.skip.paths",
    "connections.max.reauth.ms",
    "sasl.enabled.mechanisms",
    "sasl.mechanism.inter.broker.protocol",
    "sasl.mechanism.controller.protocol",
    "sasl.jaas.config",
];

/// Whether `key` is a security key this module reads (config.rs hands these over).
pub fn is_security_key(key: &str) -> bool {
    if SSL_KEYS.contains(&key)
        || SSL_KEYS_WITHOUT_EFFECT.contains(&key)
        || SASL_KEYS.contains(&key)
        || OAUTH_KEYS.contains(&key)
    {
        return true;
    }
    let Some(rest) = key.strip_prefix(LISTENER_PREFIX) else {
        return false;
    };
    let Some((_, k)) = rest.split_once('.') else {
        return false;
    };
    if SSL_KEYS.contains(&k)
        || SSL_KEYS_WITHOUT_EFFECT.contains(&k)
        || k == "sasl.enabled.mechanisms"
        || k == "connections.max.reauth.ms"
        || OAUTH_KEYS.contains(&k)
        || k == "oauthbearer.sasl.server.callback.handler.class"
    {
        return true;
    }
    // listener.name.<l>.<mechanism>.sasl.jaas.config
    k.strip_suffix(".sasl.jaas.config")
        .is_some_and(|m| !m.contains('.'))
}

/// Keys whose values are secrets: never logged nor described.
pub fn is_sensitive(key: &str) -> bool {
    key.ends_with("sasl.jaas.config")
        || key.ends_with("password")
        || key.ends_with("ssl.keystore.key")
}

/// A listener's security protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub fn parse(s: &str) -> Protocol {
        match s {
            "SSL" => Protocol::Ssl,
            "SASL_PLAINTEXT" => Protocol::SaslPlaintext,
            "SASL_SSL" => Protocol::SaslSsl,
            _ => Protocol::Plaintext,
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// One listener's validated settings.
#[derive(Debug, Clone)]
pub struct ListenerSecurity {
    pub protocol: Protocol,
    pub tls: Option<tls::TlsSettings>,
    pub sasl: Option<sasl::SaslSettings>,
}

/// The security keys, validated against the listeners.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    pub keys: BTreeMap<String, String>,
    pub listeners: BTreeMap<String, ListenerSecurity>,
    /// How this broker authenticates to its peers on the inter-broker listener.
    pub inter_broker_sasl: Option<SaslCredentials>,
    /// The HTTP admin API's TLS and authentication (`http_settings`).
    pub http: HttpSecurity,
    /// The quorum port's security (`controller_settings`); None: PLAINTEXT.
    pub controller: Option<ControllerSecurity>,
}

/// The first controller listener's settings: what the quorum port speaks, both as a
/// voter serves it and as this node dials the voters (`quorum.rs`).
#[derive(Debug, Clone)]
pub struct ControllerSecurity {
    pub listener: String,
    pub protocol: Protocol,
    pub tls: Option<tls::TlsSettings>,
    /// A voter's side: PLAIN's users (the listener's JAAS `user_<name>` entries).
    pub plain_users: Option<BTreeMap<String, String>>,
    /// The dialler's side: `sasl.mechanism.controller.protocol` and this node's
    /// username and password.
    pub credentials: Option<SaslCredentials>,
}

/// The HTTP admin API's settings: TLS when `http.listeners` is `https://...`, with
/// `listener.name.http.ssl.*` over `ssl.*`; `http.authentication.method` (Confluent REST's
/// `authentication.method`): NONE, BASIC (the broker's SCRAM users, then the PLAIN JAAS
/// users of its SASL listeners), BEARER (a JWT validated as OAUTHBEARER is on the first
/// broker listener that enables it), or both comma-separated.
#[derive(Debug, Clone, Default)]
pub struct HttpSecurity {
    pub tls: Option<tls::TlsSettings>,
    pub basic: bool,
    pub bearer: Option<oauth::OAuthSettings>,
    /// `http.authentication.skip.paths`: exact paths served without credentials.
    pub skip_paths: Vec<String>,
    /// The PLAIN users of each SASL listener enabling PLAIN.
    pub plain_users: Vec<BTreeMap<String, String>>,
}

impl HttpSecurity {
    /// Whether a request needs credentials (or a verified client certificate).
    pub fn required(&self, path: &str) -> bool {
        (self.basic || self.bearer.is_some()) && !self.skip_paths.iter().any(|p| p == path)
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl SecurityConfig {
    /// `key` for listener `name`: `listener.name.<name lower-case>.<key>` over `<key>`.
    fn get(&self, listener: &str, key: &str) -> Option<(String, String)> {
        let prefixed = format!("{LISTENER_PREFIX}{}.{key}", listener.to_ascii_lowercase());
        self.keys
            .get(&prefixed)
            .map(|v| (prefixed, v.clone()))
            .or_else(|| self.keys.get(key).map(|v| (key.to_string(), v.clone())))
    }

    /// The JAAS module for a listener and mechanism.
    fn jaas(
        &self,
        listener: &str,
        mechanism: SaslMechanism,
    ) -> Result<Option<jaas::JaasModule>, ConfigError> {
        let key = format!("{}.sasl.jaas.config", mechanism.name().to_ascii_lowercase());
        match self
            .get(listener, &key)
            .or_else(|| self.get(listener, "sasl.jaas.config"))
        {
            None => Ok(None),
            Some((k, v)) => jaas::parse(&v)
                .map(Some)
                .map_err(|e| invalid(&k, "(hidden: it may hold passwords)", e)),
        }
    }

    /// Validates the security keys of every broker listener (no file is read here).
    pub fn validate(
        keys: BTreeMap<String, String>,
        listeners: &crate::server::listeners::Listeners,
    ) -> Result<SecurityConfig, ConfigError> {
        let mut c = SecurityConfig {
            keys,
            ..Default::default()
        };
        for e in &listeners.broker {
            let protocol = Protocol::parse(
                listeners
                    .protocols
                    .get(&e.name)
                    .map_or("PLAINTEXT", String::as_str),
            );
            let tls = if protocol.tls() {
                let get = |k: &str| c.get(&e.name, k);
                Some(tls::settings(&get).map_err(|r| {
                    invalid(
                        "listeners",
                        &e.to_string(),
                        format!("TLS settings of listener {}: {r}", e.name),
                    )
                })?)
            } else {
                None
            };
            let sasl = if protocol.sasl() {
                Some(c.sasl_settings(&e.name)?)
            } else {
                None
            };
            c.listeners.insert(
                e.name.clone(),
                ListenerSecurity {
                    protocol,
                    tls,
                    sasl,
                },
            );
        }
        let inter = &listeners.inter_broker;
        if c.listeners.get(inter).is_some_and(|l| l.protocol.sasl()) {
            c.inter_broker_sasl = c.inter_broker_credentials(inter)?;
        }
        Ok(c)
    }

    /// The quorum port's settings from the first controller listener (Kafka's keys), for
    /// a node in a cluster; `voter`: this node serves the port (process.roles has
    /// controller). Checks what can be checked without reading files, each error naming
    /// the key to set. Called after `validate`.
    pub fn controller_settings(
        &self,
        listeners: &crate::server::listeners::Listeners,
        voter: bool,
    ) -> Result<Option<ControllerSecurity>, ConfigError> {
        let Some((name, protocol)) = &listeners.controller_protocol else {
            return Ok(None);
        };
        let protocol = Protocol::parse(protocol);
        if protocol == Protocol::Plaintext {
            return Ok(None);
        }
        let lower = name.to_ascii_lowercase();
        let tls = if protocol.tls() {
            let get = |k: &str| self.get(name, k);
            let t = tls::settings(&get).map_err(|r| {
                invalid(
                    "listener.security.protocol.map",
                    &format!("{name}:{}", quorum::kafka_name(protocol)),
                    format!("TLS settings of controller listener {name}: {r}"),
                )
            })?;
            if voter && t.keystore.is_none() {
                return Err(invalid(
                    &format!("listener.name.{lower}.ssl.keystore.location"),
                    "",
                    format!("controller listener {name} uses {} but has no keystore: set it (or ssl.keystore.location) with ssl.keystore.type=PEM, or ssl.keystore.certificate.chain and ssl.keystore.key", quorum::kafka_name(protocol)),
                ));
            }
            if t.truststore.is_none() {
                return Err(invalid(
                    &format!("listener.name.{lower}.ssl.truststore.location"),
                    "",
                    format!("controller listener {name} uses {}: this node checks the voters' certificates against it; set it (or ssl.truststore.location) with ssl.truststore.type=PEM", quorum::kafka_name(protocol)),
                ));
            }
            Some(t)
        } else {
            None
        };
        let (mut plain_users, mut credentials) = (None, None);
        if protocol.sasl() {
            let key = "sasl.mechanism.controller.protocol";
            let value = self
                .keys
                .get(key)
                .cloned()
                .unwrap_or_else(|| "GSSAPI".into());
            let mechanism = SaslMechanism::from_name(value.trim()).ok_or_else(|| {
                let why = if value.trim() == "GSSAPI" {
                    "Kafka's default GSSAPI is not supported".to_string()
                } else {
                    format!("{} is not a SASL mechanism Runnel has", value.trim())
                };
                invalid(
                    key,
                    &value,
                    format!("controller listener {name} uses SASL: set this to PLAIN ({why})"),
                )
            })?;
            if mechanism != SaslMechanism::Plain {
                return Err(invalid(
                    key,
                    &value,
                    "the metadata quorum's port authenticates with PLAIN only: SCRAM credentials live in the metadata log it carries",
                ));
            }
            if voter {
                let s = self.sasl_settings(name)?;
                if !s.mechanisms.contains(&mechanism) {
                    return Err(invalid(
                        &format!("listener.name.{lower}.sasl.enabled.mechanisms"),
                        &s.mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>().join(","),
                        format!("controller listener {name}: {} (sasl.mechanism.controller.protocol) must be enabled", mechanism.name()),
                    ));
                }
                plain_users = Some(s.plain_users);
            }
            let jaas_key = format!("listener.name.{lower}.plain.sasl.jaas.config");
            let module = self.jaas(name, mechanism)?;
            let option = |k: &str| module.as_ref().and_then(|m| m.options.get(k)).cloned();
            match (option("username"), option("password")) {
                (Some(username), Some(password)) => {
                    credentials = Some(SaslCredentials {
                        mechanism,
                        username,
                        password,
                    })
                }
                _ => {
                    return Err(invalid(
                        &jaas_key,
                        "",
                        format!("controller listener {name} uses SASL: its JAAS config (or sasl.jaas.config) needs username and password, what this node authenticates to the voters with"),
                    ))
                }
            }
        }
        Ok(Some(ControllerSecurity {
            listener: name.clone(),
            protocol,
            tls,
            plain_users,
            credentials,
        }))
    }

    /// The HTTP admin API's settings (see `HttpSecurity`); `https`: `http.listeners` is
    /// `https://...`. Called after `validate` (BEARER reuses a listener's OAUTHBEARER).
    pub fn http_settings(&self, https: bool) -> Result<HttpSecurity, ConfigError> {
        let tls = if https {
            let get = |k: &str| self.get("HTTP", k);
            Some(tls::settings(&get).map_err(|r| {
                invalid(
                    "http.listeners",
                    "https://...",
                    format!("TLS settings of the HTTP listener (listener.name.http.ssl.* over ssl.*): {r}"),
                )
            })?)
            .filter(|t| t.keystore.is_some())
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    "http.listeners",
                    "https://...",
                    "HTTPS needs a certificate: set listener.name.http.ssl.keystore.location (or ssl.keystore.location) with ssl.keystore.type=PEM",
                )
            })?
        } else {
            None
        };
        let mut h = HttpSecurity {
            tls,
            ..Default::default()
        };
        let key = "http.authentication.method";
        let value = self.keys.get(key).cloned().unwrap_or_default();
        for m in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match m.to_ascii_uppercase().as_str() {
                "NONE" => {}
                "BASIC" => h.basic = true,
                "BEARER" => {
                    let oauth = self
                        .listeners
                        .values()
                        .find_map(|l| l.sasl.as_ref()?.oauth.clone())
                        .ok_or_else(|| {
                            invalid(key, &value, "BEARER validates tokens as OAUTHBEARER does: enable OAUTHBEARER on a SASL listener (sasl.enabled.mechanisms) and configure its validator")
                        })?;
                    h.bearer = Some(oauth);
                }
                other => {
                    return Err(invalid(
                        key,
                        &value,
                        format!("{other} is not a method; expected NONE, BASIC or BEARER (comma-separated for several)"),
                    ))
                }
            }
        }
        h.plain_users = self
            .listeners
            .values()
            .filter_map(|l| l.sasl.as_ref())
            .map(|s| s.plain_users.clone())
            .filter(|u| !u.is_empty())
            .collect();
        let key = "http.authentication.skip.paths";
        if let Some(v) = self.keys.get(key) {
            for p in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !p.starts_with('/') {
                    return Err(invalid(
                        key,
                        v,
                        format!("{p:?} is not a path (paths start with /)"),
                    ));
                }
                h.skip_paths.push(p.to_string());
            }
        }
        Ok(h)
    }

    fn sasl_settings(&self, listener: &str) -> Result<sasl::SaslSettings, ConfigError> {
        let (key, value) = self
            .get(listener, "sasl.enabled.mechanisms")
            .unwrap_or(("sasl.enabled.mechanisms".into(), "GSSAPI".into()));
        let mut mechanisms = Vec::new();
        for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let m = SaslMechanism::from_name(name).ok_or_else(|| {
                invalid(
                    &key,
                    &value,
                    format!("{name} is not supported (Runnel has PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER; Kafka's default is GSSAPI, so a SASL listener needs this key set)"),
                )
            })?;
            mechanisms.push(m);
        }
        if mechanisms.is_empty() {
            return Err(invalid(
                &key,
                &value,
                format!("listener {listener} uses SASL but enables no mechanism"),
            ));
        }
        let oauth = if mechanisms.contains(&SaslMechanism::OAuthBearer) {
            Some(self.oauth_settings(listener)?)
        } else {
            None
        };
        let mut plain_users = BTreeMap::new();
        if mechanisms.contains(&SaslMechanism::Plain) {
            let module = self.jaas(listener, SaslMechanism::Plain)?.ok_or_else(|| {
                invalid(
                    &format!("listener.name.{}.plain.sasl.jaas.config", listener.to_ascii_lowercase()),
                    "",
                    "PLAIN is enabled but has no JAAS config naming its users (user_<name>=\"<password>\")",
                )
            })?;
            if module.class != jaas::PLAIN_MODULE {
                return Err(invalid(
                    "sasl.jaas.config",
                    &module.class,
                    format!("PLAIN needs {}", jaas::PLAIN_MODULE),
                ));
            }
            for (k, v) in &module.options {
                if let Some(user) = k.strip_prefix("user_") {
                    plain_users.insert(user.to_string(), v.clone());
                }
            }
        }
        let reauth_ms = match self.get(listener, "connections.max.reauth.ms") {
            None => None,
            Some((k, v)) => match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(ms) => Some(ms),
                Err(_) => {
                    return Err(invalid(
                        &k,
                        &v,
                        "expected milliseconds (0: no re-authentication)",
                    ))
                }
            },
        };
        Ok(sasl::SaslSettings {
            mechanisms,
            plain_users,
            reauth_ms,
            oauth,
        })
    }

    /// OAUTHBEARER: unsecured JWTs (Kafka's default validator) or JWKS-signed ones
    /// (`...oauthbearer.sasl.server.callback.handler.class` set to Kafka's
    /// `OAuthBearerValidatorCallbackHandler`, keys from a `file:` JWKS URL).
    fn oauth_settings(&self, listener: &str) -> Result<oauth::OAuthSettings, ConfigError> {
        let module = self.jaas(listener, SaslMechanism::OAuthBearer)?;
        let option = |k: &str| module.as_ref().and_then(|m| m.options.get(k)).cloned();
        let handler_key = "oauthbearer.sasl.server.callback.handler.class";
        let handler = self
            .get(listener, handler_key)
            .map(|(_, v)| v.trim().to_string());
        let get = |k: &str| self.get(listener, k).map(|(_, v)| v.trim().to_string());
        let skew = |key: &str, v: Option<String>, unit: f64| -> Result<f64, ConfigError> {
            v.map_or(Ok(30.0), |v| {
                v.parse::<f64>()
                    .map(|n| n / unit)
                    .map_err(|_| invalid(key, &v, "expected a number"))
            })
        };
        let mode = match handler.as_deref() {
            None | Some(UNSECURED_HANDLER) => oauth::Mode::Unsecured {
                required_scope: option("unsecuredValidatorRequiredScope")
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
            },
            Some(JWKS_HANDLER) => {
                let key = "sasl.oauthbearer.jwks.endpoint.url";
                let url = get(key).ok_or_else(|| invalid(key, "", "the JWKS validator needs it"))?;
                let path = url.strip_prefix("file://").ok_or_else(|| {
                    invalid(key, &url, "Runnel reads the JWKS from a file:// URL only (no HTTP fetch yet)")
                })?;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid(key, &url, format!("cannot read it: {e}")))?;
                let keys = oauth::parse_jwks(&text).map_err(|e| invalid(key, &url, e))?;
                oauth::Mode::Jwks {
                    keys,
                    audience: get("sasl.oauthbearer.expected.audience")
                        .map(|a| a.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                        .unwrap_or_default(),
                    issuer: get("sasl.oauthbearer.expected.issuer"),
                }
            }
            Some(other) => {
                return Err(invalid(
                    handler_key,
                    other,
                    format!("Runnel has Kafka's two validators: {UNSECURED_HANDLER} (default) and {JWKS_HANDLER}"),
                ))
            }
        };
        let unsecured = matches!(mode, oauth::Mode::Unsecured { .. });
        let principal_claim = if unsecured {
            option("unsecuredValidatorPrincipalClaimName")
        } else {
            get("sasl.oauthbearer.sub.claim.name")
        };
        let scope_claim = if unsecured {
            option("unsecuredValidatorScopeClaimName")
        } else {
            get("sasl.oauthbearer.scope.claim.name")
        };
        let clock_skew_s = if unsecured {
            skew(
                "unsecuredValidatorAllowableClockSkewMs",
                option("unsecuredValidatorAllowableClockSkewMs"),
                1000.0,
            )?
        } else {
            skew(
                "sasl.oauthbearer.clock.skew.seconds",
                get("sasl.oauthbearer.clock.skew.seconds"),
                1.0,
            )?
        };
        Ok(oauth::OAuthSettings {
            mode,
            principal_claim: principal_claim.unwrap_or_else(|| "sub".into()),
            scope_claim: scope_claim.unwrap_or_else(|| "scope".into()),
            clock_skew_s,
        })
    }

    /// `sasl.mechanism.inter.broker.protocol` and the broker's own username/password from
    /// that mechanism's JAAS config on the inter-broker listener (Kafka's way).
    fn inter_broker_credentials(
        &self,
        listener: &str,
    ) -> Result<Option<SaslCredentials>, ConfigError> {
        let key = "sasl.mechanism.inter.broker.protocol";
        let name = self
            .keys
            .get(key)
            .cloned()
            .unwrap_or_else(|| "GSSAPI".into());
        let mechanism = SaslMechanism::from_name(&name).ok_or_else(|| {
            invalid(key, &name, "the inter-broker listener uses SASL: set this to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (Kafka's default GSSAPI is not supported)")
        })?;
        let enabled = self.listeners.get(listener).and_then(|l| l.sasl.as_ref());
        if !enabled.is_some_and(|s| s.mechanisms.contains(&mechanism)) {
            return Err(invalid(
                key,
                &name,
                format!(
                    "not enabled on the inter-broker listener {listener} (sasl.enabled.mechanisms)"
                ),
            ));
        }
        let Some(module) = self.jaas(listener, mechanism)? else {
            return Ok(None);
        };
        match (
            module.options.get("username"),
            module.options.get("password"),
        ) {
            (Some(u), Some(p)) => Ok(Some(SaslCredentials {
                mechanism,
                username: u.clone(),
                password: p.clone(),
            })),
            _ => Ok(None),
        }
    }
}

/// The running security state of a broker.
#[derive(Default)]
pub struct Security {
    tls: BTreeMap<String, Arc<tls::TlsListener>>,
    pub scram: scram::ScramStore,
    /// What the replica fetchers and coordinators use to reach peers.
    pub inter_broker_client: Option<Arc<ClientSecurity>>,
    /// The HTTP admin API's TLS (`http.listeners=https://...`).
    pub http_tls: Option<Arc<tls::TlsListener>>,
    /// Passwords the HTTP API verified lately (see `http::auth`).
    pub http_passwords: crate::http::auth::PasswordCache,
    /// How the metadata quorum's port is secured (PLAINTEXT by default).
    pub quorum: runnel_meta::transport::QuorumTransport,
}

/// A rustls client configuration for a listener's TLS settings: its truststore, and its
/// keystore as the client certificate when the listener asks for one (mTLS).
fn client_tls(t: &tls::TlsSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    let ca = t.truststore.as_ref().map(|p| match p {
        tls::Pem::File(f) => runnel_client::security::read_file(f, "ssl.truststore.location"),
        tls::Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
    });
    let identity = match (&t.keystore, t.client_auth) {
        (Some((tls::Pem::File(f), _)), tls::ClientAuth::Requested | tls::ClientAuth::Required) => {
            let pem = runnel_client::security::read_file(f, "ssl.keystore.location")?;
            Some((pem.clone(), pem))
        }
        (
            Some((tls::Pem::Inline(c), tls::Pem::Inline(k))),
            tls::ClientAuth::Requested | tls::ClientAuth::Required,
        ) => Some((c.as_bytes().to_vec(), k.as_bytes().to_vec())),
        _ => None,
    };
    let opts = TlsClientOptions {
        ca_pem: ca.transpose()?,
        identity_pem: identity,
        verify_hostname: t.verify_hostname,
    };
    runnel_client::security::tls_client_config(&opts)
}

impl Security {
    /// Loads the TLS files of every TLS listener (errors name the listener and key).
    pub fn build(config: &BrokerConfig) -> Result<Security, String> {
        let mut s = Security::default();
        for (name, l) in &config.security.listeners {
            if let Some(t) = &l.tls {
                let listener = tls::TlsListener::new(t.clone())
                    .map_err(|e| format!("listener {name}: {e}"))?;
                s.tls.insert(name.clone(), Arc::new(listener));
            }
        }
        if let Some(t) = &config.security.http.tls {
            let listener =
                tls::TlsListener::new(t.clone()).map_err(|e| format!("HTTP listener: {e}"))?;
            s.http_tls = Some(Arc::new(listener));
        }
        let inter = &config.listeners.inter_broker;
        if let Some(l) = config
            .security
            .listeners
            .get(inter)
            .filter(|l| l.protocol != Protocol::Plaintext)
        {
            let tls = match &l.tls {
                None => None,
                Some(t) => {
                    Some(client_tls(t).map_err(|e| format!("inter-broker listener {inter}: {e}"))?)
                }
            };
            let sasl = config.security.inter_broker_sasl.clone();
            if l.protocol.sasl() && sasl.is_none() {
                let msg = format!(
                    "inter-broker listener {inter} uses SASL but listener.name.{}.<mechanism>.sasl.jaas.config has no username and password for this broker",
                    inter.to_ascii_lowercase()
                );
                if config.cluster.has_peers(config.node_id) {
                    return Err(msg);
                }
                tracing::warn!("{msg}; a single node does not need them");
            }
            s.inter_broker_client = Some(Arc::new(ClientSecurity { tls, sasl }));
        }
        if let Some(c) = &config.security.controller {
            s.quorum = s.quorum_transport(config, c)?;
        }
        Ok(s)
    }

    /// The quorum port's transport for a secured controller listener (reads its TLS
    /// files; the voter's certificates then reload with the broker listeners').
    fn quorum_transport(
        &mut self,
        config: &BrokerConfig,
        c: &ControllerSecurity,
    ) -> Result<runnel_meta::transport::QuorumTransport, String> {
        let what = |e: String| format!("controller listener {}: {e}", c.listener);
        let voter = config.cluster.controller_role;
        let (mut tls_server, mut tls_client) = (None, None);
        if let Some(t) = &c.tls {
            if voter {
                let l = Arc::new(tls::TlsListener::new(t.clone()).map_err(what)?);
                self.tls.insert(c.listener.clone(), l.clone());
                tls_server = Some(l);
            }
            tls_client = Some(tokio_rustls::TlsConnector::from(
                client_tls(t).map_err(what)?,
            ));
        }
        let voter_hosts = config
            .cluster
            .voters
            .iter()
            .filter_map(|(id, addr)| Some((*addr, config.cluster.voter_hosts.get(id)?.clone())))
            .collect();
        Ok(runnel_meta::transport::QuorumTransport::new(
            quorum::QuorumSecurity {
                listener: c.listener.clone(),
                protocol: c.protocol,
                tls_server,
                tls_client,
                voter_hosts,
                plain_users: c.plain_users.clone().filter(|_| voter),
                credentials: c.credentials.clone(),
            },
        ))
    }

    pub fn tls(&self, listener: &str) -> Option<&Arc<tls::TlsListener>> {
        self.tls.get(listener)
    }

    /// Polls the TLS files every 30 s and swaps in changed certificates.
    pub async fn reload_loop(broker: Arc<crate::broker::Broker>) {
        if broker.security.tls.is_empty() && broker.security.http_tls.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            for (name, l) in &broker.security.tls {
                l.reload_if_changed(name);
            }
            if let Some(l) = &broker.security.http_tls {
                l.reload_if_changed("HTTP");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(spec: &str, map: &str) -> crate::server::listeners::Listeners {
        let mut c = crate::server::listeners::ListenerConfig::default();
        c.listeners = crate::server::listeners::parse_endpoints("listeners", spec).unwrap();
        c.protocol_map = crate::server::listeners::parse_protocol_map("m", map).unwrap();
        c.protocol_map_set = true;
        c.validate(true, None).unwrap()
    }

    fn keys(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_are_recognised() {
        assert!(is_security_key("ssl.keystore.location"));
        assert!(is_security_key("listener.name.sasl_ssl.ssl.client.auth"));
        assert!(is_security_key(
            "listener.name.x.scram-sha-256.sasl.jaas.config"
        ));
        assert!(is_security_key("listener.name.x.sasl.enabled.mechanisms"));
        assert!(is_security_key("listener.name.x.connections.max.reauth.ms"));
        assert!(!is_security_key("listener.name.x.bogus"));
        assert!(!is_security_key("ssl.bogus"));
    }

    #[test]
    fn sasl_listeners_need_mechanisms_and_users() {
        let l = listeners(
            "PLAINTEXT://:9092,SECURE://:9093",
            "PLAINTEXT:PLAINTEXT,SECURE:SASL_PLAINTEXT",
        );
        let e = SecurityConfig::validate(keys(&[]), &l)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GSSAPI"), "{e}");
        let e = SecurityConfig::validate(keys(&[("sasl.enabled.mechanisms", "PLAIN")]), &l)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain.sasl.jaas.config"), "{e}");
        let c = SecurityConfig::validate(
            keys(&[
                ("listener.name.secure.sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512"),
                ("listener.name.secure.plain.sasl.jaas.config", r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="a";"#),
            ]),
            &l,
        )
        .unwrap();
        let s = c.listeners["SECURE"].sasl.as_ref().unwrap();
        assert_eq!(s.plain_users["alice"], "a");
        assert_eq!(s.mechanisms.len(), 2);
        assert!(c.listeners["PLAINTEXT"].sasl.is_none());
        let e = SecurityConfig::validate(
            keys(&[
                ("sasl.enabled.mechanisms", "PLAIN"),
                ("sasl.jaas.config", "broken"),
            ]),
            &l,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("control flag"), "{e}");
    }

    #[test]
    fn tls_settings_are_checked() {
        let l = listeners("SSL://:9093", "SSL:SSL");
        let e = SecurityConfig::validate(
            keys(&[
                ("ssl.keystore.type", "JKS"),
                ("ssl.keystore.location", "/k.jks"),
            ]),
            &l,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("PEM"), "{e}");
        let e = SecurityConfig::validate(keys(&[("ssl.keystore.location", "/k.jks")]), &l)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssl.keystore.type"), "{e}");
        let e = SecurityConfig::validate(
            keys(&[
                ("ssl.keystore.type", "PEM"),
                ("ssl.keystore.location", "/k"),
                ("ssl.client.auth", "required"),
            ]),
            &l,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("truststore"), "{e}");
        let c = SecurityConfig::validate(
            keys(&[
                ("ssl.keystore.type", "PEM"),
                ("ssl.keystore.location", "/k"),
                ("listener.name.ssl.ssl.enabled.protocols", "TLSv1.3,TLSv1.1"),
            ]),
            &l,
        )
        .unwrap();
        assert_eq!(
            c.listeners["SSL"].tls.as_ref().unwrap().protocols,
            vec!["TLSv1.3"]
        );
        // The file is read at start, with an error naming it.
        let e = Security::build(&BrokerConfig {
            security: c,
            ..BrokerConfig::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("/k"), "{e}");
    }
}
