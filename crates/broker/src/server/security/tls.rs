//! TLS for SSL and SASL_SSL listeners: Kafka's `ssl.*` keys (PEM keystores and
//! truststores, `ssl.client.auth`, protocols, cipher suites) to a rustls `ServerConfig`,
//! reloaded when its files change, and the mTLS principal (the certificate's subject
//! DN as Java prints it, through `ssl.principal.mapping.rules`).
//!
//! `TlsListener` is thread-safe: the current `ServerConfig` is swapped under a lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use runnel_client::security::{pem_certs, pem_key, provider, read_file};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

#[derive(Debug, Clone)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    fn load(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Pem::File(p) => read_file(p, what),
            Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
        }
    }

    fn path(&self) -> Option<&PathBuf> {
        match self {
            Pem::File(p) => Some(p),
            Pem::Inline(_) => None,
        }
    }
}

/// One listener's TLS settings, resolved from `listener.name.<l>.ssl.*` over `ssl.*`.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The key and certificate chain: one PEM (file or inline pair).
    pub keystore: Option<(Pem, Pem)>,
    pub truststore: Option<Pem>,
    pub client_auth: ClientAuth,
    /// TLSv1.2 / TLSv1.3 (Kafka's names).
    pub protocols: Vec<String>,
    /// IANA names; None: rustls's defaults.
    pub cipher_suites: Option<Vec<String>>,
    pub principal_rules: Vec<PrincipalRule>,
    /// `ssl.endpoint.identification.algorithm` is `https` (a broker dialling a peer checks
    /// the peer's host name).
    pub verify_hostname: bool,
}

/// Reads one listener's `ssl.*` keys; `get` resolves a key with the listener prefix
/// first, and returns the key name found (for errors) with the value.
pub fn settings(get: &dyn Fn(&str) -> Option<(String, String)>) -> Result<TlsSettings, String> {
    let ty = |k: &str| -> Result<(), String> {
        match get(k) {
            Some((key, v)) if !v.trim().eq_ignore_ascii_case("PEM") => Err(format!(
                "{key}={v}: Runnel reads PEM only; convert the store to PEM \
                 (keytool -importkeystore -deststoretype PKCS12, then openssl pkcs12 -nodes) \
                 and set {k}=PEM"
            )),
            _ => Ok(()),
        }
    };
    let location_type = |loc: &str, k: &str| -> Result<(), String> {
        // Kafka's default store type is JKS: a location without a type is a JKS file,
        // unless it holds PEM (then say which key to set).
        if get(k).is_none() && get(loc).is_some() {
            return Err(format!("{loc} is set but {k} is not (Kafka's default is JKS): Runnel reads PEM only; set {k}=PEM"));
        }
        Ok(())
    };
    ty("ssl.keystore.type")?;
    ty("ssl.truststore.type")?;
    location_type("ssl.keystore.location", "ssl.keystore.type")?;
    location_type("ssl.truststore.location", "ssl.truststore.type")?;
    let keystore = match (
        get("ssl.keystore.location"),
        get("ssl.keystore.certificate.chain"),
        get("ssl.keystore.key"),
    ) {
        (Some((_, loc)), None, None) => {
            let p = Pem::File(PathBuf::from(loc.trim()));
            Some((p.clone(), p))
        }
        (None, Some((_, chain)), Some((_, key))) => Some((Pem::Inline(chain), Pem::Inline(key))),
        (None, None, None) => None,
        (Some(_), _, _) => {
            return Err(
                "set either ssl.keystore.location or ssl.keystore.certificate.chain with \
                 ssl.keystore.key, not both"
                    .into(),
            )
        }
        _ => return Err("ssl.keystore.certificate.chain and ssl.keystore.key go together".into()),
    };
    // ssl.key.password: an encrypted key is refused at load with a message saying how to
    // decrypt it; a clear key needs no password.
    let truststore = match (
        get("ssl.truststore.location"),
        get("ssl.truststore.certificates"),
    ) {
        (Some((_, loc)), None) => Some(Pem::File(PathBuf::from(loc.trim()))),
        (None, Some((_, pem))) => Some(Pem::Inline(pem)),
        (None, None) => None,
        _ => {
            return Err(
                "set ssl.truststore.location or ssl.truststore.certificates, not both".into(),
            )
        }
    };
    let client_auth = match get("ssl.client.auth") {
        None => ClientAuth::None,
        Some((key, v)) => match v.trim().to_ascii_lowercase().as_str() {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            _ => return Err(format!("{key}={v}: expected none, requested or required")),
        },
    };
    if client_auth != ClientAuth::None && truststore.is_none() {
        return Err(format!(
            "ssl.client.auth={client_auth:?} needs the CA that signs client certificates: \
             set ssl.truststore.type=PEM and ssl.truststore.location"
        )
        .to_lowercase());
    }
    let protocols: Vec<String> = match get("ssl.enabled.protocols") {
        None => vec!["TLSv1.2".into(), "TLSv1.3".into()],
        Some((key, v)) => {
            let listed: Vec<String> = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let kept: Vec<String> = listed
                .iter()
                .filter(|p| *p == "TLSv1.2" || *p == "TLSv1.3")
                .cloned()
                .collect();
            let dropped: Vec<&String> = listed.iter().filter(|p| !kept.contains(p)).collect();
            if !dropped.is_empty() {
                tracing::warn!(
                    key,
                    ?dropped,
                    "TLS versions older than 1.2 are not served (rustls has none); ignoring them"
                );
            }
            if kept.is_empty() {
                return Err(format!(
                    "{key}={v}: no protocol Runnel serves; use TLSv1.2 and/or TLSv1.3"
                ));
            }
            kept
        }
    };
    let cipher_suites = get("ssl.cipher.suites").and_then(|(_, v)| {
        let list: Vec<String> = v
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        (!list.is_empty()).then_some(list)
    });
    let principal_rules = match get("ssl.principal.mapping.rules") {
        None => vec![PrincipalRule::Default],
        Some((key, v)) => parse_rules(&v).map_err(|e| format!("{key}: {e}"))?,
    };
    let verify_hostname = get("ssl.endpoint.identification.algorithm")
        .is_none_or(|(_, v)| v.trim().eq_ignore_ascii_case("https"));
    Ok(TlsSettings {
        keystore,
        truststore,
        client_auth,
        protocols,
        cipher_suites,
        principal_rules,
        verify_hostname,
    })
}

/// The rustls server configuration for these settings (reads the files).
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let (chain, key) = s
        .keystore
        .as_ref()
        .ok_or("a TLS listener needs ssl.keystore.location (or ssl.keystore.certificate.chain and ssl.keystore.key)")?;
    let chain = pem_certs(
        &chain.load("ssl.keystore")?,
        "ssl.keystore certificate chain",
    )?;
    let key = pem_key(&key.load("ssl.keystore")?, "ssl.keystore key")?;
    let mut provider = (*provider()).clone();
    if let Some(wanted) = &s.cipher_suites {
        let name = |cs: &rustls::SupportedCipherSuite| {
            format!("{:?}", cs.suite()).replace("TLS13_", "TLS_")
        };
        let unknown: Vec<&String> = wanted
            .iter()
            .filter(|w| !provider.cipher_suites.iter().any(|cs| name(cs) == **w))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<String> = provider.cipher_suites.iter().map(name).collect();
            return Err(format!(
                "ssl.cipher.suites: {unknown:?} not available; Runnel has {}",
                known.join(", ")
            ));
        }
        provider
            .cipher_suites
            .retain(|cs| wanted.contains(&name(cs)));
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = s
        .protocols
        .iter()
        .map(|p| {
            if p == "TLSv1.3" {
                &rustls::version::TLS13
            } else {
                &rustls::version::TLS12
            }
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("ssl.enabled.protocols / ssl.cipher.suites: {e}"))?;
    let builder = match s.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let pem = s
                .truststore
                .as_ref()
                .ok_or("ssl.client.auth needs ssl.truststore.location")?
                .load("ssl.truststore")?;
            let mut roots = rustls::RootCertStore::empty();
            for c in pem_certs(&pem, "ssl.truststore")? {
                roots.add(c).map_err(|e| format!("ssl.truststore: {e}"))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == ClientAuth::Requested {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| format!("ssl.truststore: {e}"))?)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("ssl.keystore: the key does not fit the certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// A TLS listener's acceptor state, reloaded when its files change.
pub struct TlsListener {
    pub settings: TlsSettings,
    config: RwLock<Arc<ServerConfig>>,
    stamps: parking_lot::Mutex<Vec<Option<SystemTime>>>,
}

impl TlsListener {
    pub fn new(settings: TlsSettings) -> Result<TlsListener, String> {
        let config = server_config(&settings)?;
        let stamps = parking_lot::Mutex::new(stamps(&settings));
        Ok(TlsListener {
            settings,
            config: RwLock::new(config),
            stamps,
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().clone())
    }

    /// The server side of a handshake, bounded by `bound` (`request.read.timeout.ms`),
    /// and, when `map` and the client sent a certificate, its principal name (the
    /// subject DN through `ssl.principal.mapping.rules`). Err: why it failed (for the log).
    pub async fn accept(
        &self,
        stream: tokio::net::TcpStream,
        bound: std::time::Duration,
        map: bool,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
            Option<String>,
        ),
        String,
    > {
        let stream = match tokio::time::timeout(bound, self.acceptor().accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "no TLS handshake within {} ms (request.read.timeout.ms)",
                    bound.as_millis()
                ))
            }
        };
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .filter(|_| map);
        let name = match cert {
            None => None,
            Some(cert) => Some(
                subject_dn(cert)
                    .ok_or_else(|| "the client certificate's subject cannot be read".to_string())
                    .and_then(|dn| map_principal(&dn, &self.settings.principal_rules))?,
            ),
        };
        Ok((stream, name))
    }

    /// Rebuilds the configuration when a keystore or truststore file changed; a broken
    /// new file keeps the old configuration (and says why). Returns whether it swapped.
    pub fn reload_if_changed(&self, listener: &str) -> bool {
        let now = stamps(&self.settings);
        let mut seen = self.stamps.lock();
        if *seen == now {
            return false;
        }
        *seen = now;
        match server_config(&self.settings) {
            Ok(c) => {
                *self.config.write() = c;
                tracing::info!(listener, "TLS keystore or truststore changed: reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(listener, error = %e, "TLS files changed but cannot be loaded; keeping the previous ones");
                false
            }
        }
    }
}

fn stamps(s: &TlsSettings) -> Vec<Option<SystemTime>> {
    s.keystore
        .iter()
        .flat_map(|(a, b)| [a, b])
        .chain(&s.truststore)
        .filter_map(Pem::path)
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// One of `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub enum PrincipalRule {
    Default,
    Rule {
        pattern: regex_lite::Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// Parses `RULE:pattern/replacement/[LU],DEFAULT` (Kafka's `SslPrincipalMapper`).
pub fn parse_rules(text: &str) -> Result<Vec<PrincipalRule>, String> {
    let mut rules = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("DEFAULT") {
            rules.push(PrincipalRule::Default);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("RULE:") {
            let (pattern, r) = split_unescaped(r).ok_or("a RULE needs pattern/replacement/")?;
            let (replacement, r) = split_unescaped(r).ok_or("a RULE needs pattern/replacement/")?;
            let (case, r) = match r.chars().next() {
                Some(c @ ('L' | 'U')) => (Some(c), &r[1..]),
                _ => (None, r),
            };
            let pattern = regex_lite::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| format!("bad pattern {pattern:?}: {e}"))?;
            rules.push(PrincipalRule::Rule {
                pattern,
                replacement: replacement.replace("\\/", "/"),
                case,
            });
            rest = r;
        } else {
            return Err(format!("expected RULE:... or DEFAULT at {rest:?}"));
        }
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    if rules.is_empty() {
        rules.push(PrincipalRule::Default);
    }
    Ok(rules)
}

fn split_unescaped(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, n) = chars.next()?;
                if n != '/' {
                    out.push('\\');
                }
                out.push(n);
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Maps a DN through the rules: the first that matches wins; none matching is an error
/// (Kafka's `NoMatchingRule`, which fails the connection).
pub fn map_principal(dn: &str, rules: &[PrincipalRule]) -> Result<String, String> {
    for r in rules {
        match r {
            PrincipalRule::Default => return Ok(dn.to_string()),
            PrincipalRule::Rule {
                pattern,
                replacement,
                case,
            } => {
                if let Some(caps) = pattern.captures(dn) {
                    let mut out = String::new();
                    caps.expand(replacement, &mut out);
                    return Ok(match case {
                        Some('L') => out.to_lowercase(),
                        Some('U') => out.to_uppercase(),
                        _ => out,
                    });
                }
            }
        }
    }
    Err(format!(
        "no ssl.principal.mapping.rules rule matches {dn:?}"
    ))
}

/// The subject DN of a DER certificate in RFC 2253 form, as Java's
/// `X500Principal.getName()` prints it (`CN=alice,OU=eng,O=acme`): last RDN first.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let (cert, _) = der(cert, 0x30)?;
    let (mut tbs, _) = der(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs, 0xa0)?.1; // version
    }
    let mut rest = der(tbs, 0x02)?.1; // serial
    for _ in 0..3 {
        // signature algorithm, issuer, validity
        rest = der_any(rest)?.2;
    }
    let (subject, _) = der(rest, 0x30)?;
    let mut rdns = Vec::new();
    let mut set_rest = subject;
    while !set_rest.is_empty() {
        let (set, next) = der(set_rest, 0x31)?;
        set_rest = next;
        let mut parts = Vec::new();
        let mut atv_rest = set;
        while !atv_rest.is_empty() {
            let (atv, next) = der(atv_rest, 0x30)?;
            atv_rest = next;
            let (oid, value) = der(atv, 0x06)?;
            let (tag, content, _) = der_any(value)?;
            let name = oid_name(oid);
            let text = match (name.is_some(), tag) {
                (true, 0x0c | 0x13 | 0x16 | 0x14) => escape_dn(&String::from_utf8_lossy(content)),
                (true, 0x1e) => escape_dn(&String::from_utf16_lossy(
                    &content
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect::<Vec<_>>(),
                )),
                _ => {
                    // Java prints unknown types as '#' and the DER value in hex.
                    let whole = &value[..value.len() - der_any(value)?.2.len()];
                    format!(
                        "#{}",
                        whole.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    )
                }
            };
            let key = name.map_or_else(|| oid_dotted(oid), str::to_string);
            parts.push(format!("{key}={text}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = der_any(input)?;
    (t == tag).then_some((content, rest))
}

/// (tag, content, rest) of one DER element; None when malformed.
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    (end <= input.len()).then(|| (tag, &input[header..end], &input[end..]))
}

fn oid_dotted(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() && i < oid.len() {
                let first = v.min(80) / 40;
                parts.push((first.min(2)).to_string());
                parts.push((v - first.min(2) * 40).to_string());
            } else {
                parts.push(v.to_string());
            }
            v = 0;
        }
    }
    parts.join(".")
}

/// The keywords Java's RFC 2253 output uses.
fn oid_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid_dotted(oid).as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 escaping of an attribute value.
fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_rules_follow_kafka() {
        let rules = parse_rules(r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,DEFAULT").unwrap();
        assert_eq!(
            map_principal("CN=kafka-server1,OU=ServiceUsers,O=Org", &rules).unwrap(),
            "kafka-server1"
        );
        assert_eq!(
            map_principal(
                "CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Santa Clara,ST=CA,C=US",
                &rules
            )
            .unwrap(),
            "duke@javasoft"
        );
        assert_eq!(map_principal("CN=x", &rules).unwrap(), "CN=x");
        let strict = parse_rules("RULE:^CN=(.*)$/$1/U").unwrap();
        assert_eq!(map_principal("CN=bob", &strict).unwrap(), "BOB");
        assert!(map_principal("OU=x", &strict).is_err());
        assert!(parse_rules("NOPE").is_err());
    }

    /// A self-signed key and certificate for `cn` in one PEM, made with the openssl CLI.
    fn keystore(dir: &std::path::Path, cn: &str) -> Option<Vec<u8>> {
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
            ])
            .args([
                "-subj",
                &format!("/O=acme/CN={cn}"),
                "-keyout",
                "k.pem",
                "-out",
                "c.pem",
            ])
            .current_dir(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let mut pem = std::fs::read(dir.join("k.pem")).ok()?;
        pem.extend(std::fs::read(dir.join("c.pem")).ok()?);
        let der = runnel_client::security::pem_certs(&std::fs::read(dir.join("c.pem")).ok()?, "c")
            .ok()?;
        assert_eq!(
            subject_dn(&der[0]).as_deref(),
            Some(format!("CN={cn},O=acme").as_str())
        );
        Some(pem)
    }

    #[test]
    fn changed_keystores_are_reloaded_and_broken_ones_kept_out() {
        let dir = tempfile::tempdir().unwrap();
        let Some(first) = keystore(dir.path(), "one") else {
            eprintln!("openssl CLI not available: skipping the reload test");
            return;
        };
        let path = dir.path().join("keystore.pem");
        std::fs::write(&path, &first).unwrap();
        let settings = settings(&|k: &str| match k {
            "ssl.keystore.type" => Some((k.into(), "PEM".into())),
            "ssl.keystore.location" => Some((k.into(), path.display().to_string())),
            _ => None,
        })
        .unwrap();
        let l = TlsListener::new(settings).unwrap();
        assert!(!l.reload_if_changed("T"), "nothing changed yet");
        let before = l.config.read().clone();
        // A new certificate (mtime moved on): swapped in.
        let second = keystore(dir.path(), "two").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, &second).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime + std::time::Duration::from_secs(2))
            .unwrap();
        assert!(l.reload_if_changed("T"));
        assert!(!Arc::ptr_eq(&before, &l.config.read()));
        // A broken file: the previous configuration stays.
        let current = l.config.read().clone();
        std::fs::write(&path, b"not pem").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime + std::time::Duration::from_secs(4))
            .unwrap();
        assert!(!l.reload_if_changed("T"));
        assert!(Arc::ptr_eq(&current, &l.config.read()));
    }

    #[test]
    fn der_garbage_is_refused_not_panicking() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x05, 0x30, 0x03, 0x02, 0x01],
        ] {
            assert!(subject_dn(bad).is_none());
        }
        assert_eq!(escape_dn("a,b+c "), "a\\,b\\+c\\ ");
        assert_eq!(oid_dotted(&[0x55, 0x04, 0x03]), "2.5.4.3");
    }
}
