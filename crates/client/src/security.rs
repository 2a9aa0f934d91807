//! The client side of Kafka's security protocols: TLS (rustls on the ring provider) and
//! SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512, plus the SCRAM arithmetic (RFC 5802) that
//! the broker's SCRAM server shares.
//!
//! Immutable once built; thread-safe.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Kafka's lower bound on SCRAM iterations (`ScramMechanism.minIterations`).
pub const SCRAM_MIN_ITERATIONS: u32 = 4096;
/// Kafka's upper bound (`ScramMechanism.maxIterations`).
pub const SCRAM_MAX_ITERATIONS: u32 = 16384;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

/// A SCRAM hash function, by Kafka's mechanism name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The code AlterUserScramCredentials / DescribeUserScramCredentials use.
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac_alg(self) -> ring::hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => ring::hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => ring::hmac::HMAC_SHA512,
        }
    }

    fn digest_alg(self) -> &'static ring::digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &ring::digest::SHA256,
            ScramMechanism::Sha512 => &ring::digest::SHA512,
        }
    }

    pub fn output_len(self) -> usize {
        self.digest_alg().output_len()
    }

    /// HMAC(key, data).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = ring::hmac::Key::new(self.hmac_alg(), key);
        ring::hmac::sign(&key, data).as_ref().to_vec()
    }

    /// H(data).
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(self.digest_alg(), data)
            .as_ref()
            .to_vec()
    }

    /// Hi(password, salt, iterations): PBKDF2 with this HMAC.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let alg = match self {
            ScramMechanism::Sha256 => ring::pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => ring::pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let mut out = vec![0u8; self.output_len()];
        let n = std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1");
        ring::pbkdf2::derive(alg, n, salt, password.as_bytes(), &mut out);
        out
    }

    /// (StoredKey, ServerKey) from the salted password: what a server keeps.
    pub fn stored_and_server_key(self, salted: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(salted, b"Client Key");
        (self.hash(&client_key), self.hmac(salted, b"Server Key"))
    }
}

/// Random bytes from the system's generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random generator works");
    out
}

/// A printable nonce (RFC 5802 allows any printable ASCII but ',').
pub fn nonce() -> String {
    b64(&random_bytes(24))
        .replace(['+', '/'], "x")
        .trim_end_matches('=')
        .to_string()
}

/// Splits `a=1,b=2` into attributes (values may contain '=').
pub fn scram_attrs(msg: &str) -> Vec<(char, &str)> {
    msg.split(',')
        .filter_map(|part| {
            let mut chars = part.chars();
            let k = chars.next()?;
            let rest = chars.as_str().strip_prefix('=')?;
            Some((k, rest))
        })
        .collect()
}

pub fn scram_attr<'a>(attrs: &[(char, &'a str)], k: char) -> Option<&'a str> {
    attrs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v)
}

/// RFC 5802's saslname escaping ('=' and ',').
pub fn scram_escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

pub fn scram_unescape(name: &str) -> Option<String> {
    // Any '=' must start one of the two escapes.
    let valid = !name.replace("=2C", "").replace("=3D", "").contains('=');
    valid.then(|| name.replace("=2C", ",").replace("=3D", "="))
}

/// Constant-time equality of two byte strings (the lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A SASL mechanism a client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
    /// With an unsecured (alg none) JWT naming `username`: Kafka's development mode.
    OAuthBearer,
}

impl SaslMechanism {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "OAUTHBEARER" => Some(SaslMechanism::OAuthBearer),
            other => ScramMechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// SASL credentials.
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// An unsecured JWT (`alg: none`) for `principal`, valid for `lifetime_s`, in the
/// OAUTHBEARER initial client response (RFC 7628), as Kafka's unsecured login module
/// and librdkafka's `enable.sasl.oauthbearer.unsecure.jwt` make them.
pub fn oauthbearer_unsecured_message(principal: &str, lifetime_s: u64) -> Vec<u8> {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let quoted: String = principal
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let claims = format!(
        r#"{{"sub":"{quoted}","iat":{now},"exp":{}}}"#,
        now + lifetime_s
    );
    let token = format!(
        "{}.{}.",
        url.encode(r#"{"alg":"none"}"#),
        url.encode(claims)
    );
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// The client side of one SCRAM exchange.
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, username: &str, password: &str) -> Self {
        let client_nonce = nonce();
        let client_first_bare = format!("n={},r={client_nonce}", scram_escape(username));
        ScramClient {
            mechanism,
            password: password.to_string(),
            client_nonce,
            client_first_bare,
            server_signature: None,
        }
    }

    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server-first message with the client-final message.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, String> {
        let attrs = scram_attrs(server_first);
        let nonce = scram_attr(&attrs, 'r').ok_or("server-first message has no nonce")?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err("server nonce does not extend the client nonce".into());
        }
        let salt = scram_attr(&attrs, 's')
            .and_then(unb64)
            .ok_or("server-first message has no valid salt")?;
        let iterations: u32 = scram_attr(&attrs, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or("server-first message has no valid iteration count")?;
        if !(SCRAM_MIN_ITERATIONS..=SCRAM_MAX_ITERATIONS).contains(&iterations) {
            return Err(format!("server asked for {iterations} iterations"));
        }
        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.server_signature = Some(m.hmac(&server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", b64(&proof)))
    }

    /// Checks the server-final message (the server proves it knew the credential).
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), String> {
        let attrs = scram_attrs(server_final);
        if let Some(e) = scram_attr(&attrs, 'e') {
            return Err(format!("server refused: {e}"));
        }
        let v = scram_attr(&attrs, 'v')
            .and_then(unb64)
            .ok_or("server-final message has no verifier")?;
        match &self.server_signature {
            Some(expected) if ct_eq(expected, &v) => Ok(()),
            _ => {
                Err("the server's signature does not match: it does not know the credential".into())
            }
        }
    }
}

/// TLS and SASL settings for connections. Build once, share with `Arc`.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<SaslCredentials>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// Where a client's TLS trust and identity come from (PEM).
#[derive(Debug, Clone, Default)]
pub struct TlsClientOptions {
    /// CA certificates (PEM file); None: the connection cannot be verified and is refused.
    pub ca_pem: Option<Vec<u8>>,
    /// The client's certificate chain and key (PEM), for mTLS.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Check that the broker's certificate names the host dialled (Kafka's
    /// `ssl.endpoint.identification.algorithm=https`, the default).
    pub verify_hostname: bool,
}

/// The ring provider, chosen over aws-lc-rs to keep builds light (rustls deprecates it
/// only for its lack of post-quantum key exchange).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM buffer; `what` names the source in errors.
pub fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The private key in a PEM buffer (PKCS#8, PKCS#1 or SEC1).
pub fn pem_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    if std::str::from_utf8(pem).is_ok_and(|s| s.contains("ENCRYPTED PRIVATE KEY")) {
        return Err(format!(
            "{what}: the private key is encrypted, which Runnel cannot read yet; decrypt it \
             (openssl pkcs8 -in key.pem -out key-clear.pem) and drop ssl.key.password"
        ));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{what}: no usable private key: {e}"))
}

pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))
}

/// A rustls client configuration from PEM trust and identity.
pub fn tls_client_config(opts: &TlsClientOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = opts.ca_pem.as_deref().ok_or(
        "TLS needs the CA that signed the broker's certificate (ssl.truststore.location or ssl.ca.location)",
    )?;
    for cert in pem_certs(ca, "CA certificates")? {
        roots
            .add(cert)
            .map_err(|e| format!("CA certificates: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if opts.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(inner)))
    };
    let config = match &opts.identity_pem {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                pem_certs(chain, "client certificate")?,
                pem_key(key, "client key")?,
            )
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Verifies the chain but not the host name (`ssl.endpoint.identification.algorithm=`).
#[derive(Debug)]
struct NoHostnameCheck(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Kafka client keys whose values are secrets (Kafka's `ConfigDef.Type.PASSWORD`, PEM
/// content included): a describe shows them as null and sensitive, never their value.
pub const SENSITIVE_KEYS: &[&str] = &[
    "sasl.jaas.config",
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.truststore.certificates",
];

pub fn is_sensitive(key: &str) -> bool {
    SENSITIVE_KEYS.contains(&key)
}

/// The client properties [`security_from_properties`] reads: Java-style (Kafka's, with
/// KIP-651 PEM values inline) and librdkafka-style spellings.
pub const SECURITY_KEYS: &[&str] = &[
    "security.protocol",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.certificates",
    "ssl.ca.location",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.key.password",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.jaas.config",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
];

/// PEM text from a property value. A value written on one line (as a properties file
/// or a `--set` often carries it) has its markers and base64 lines separated by spaces;
/// they are put back on lines of their own.
fn pem_value(v: &str) -> Vec<u8> {
    if v.contains('\n') {
        return v.as_bytes().to_vec();
    }
    let mut out = String::new();
    let mut rest = v.trim();
    while let Some(start) = rest.find("-----") {
        for word in rest[..start].split_whitespace() {
            out.push_str(word);
            out.push('\n');
        }
        let after = &rest[start + 5..];
        let Some(end) = after.find("-----") else {
            break;
        };
        out.push_str(&rest[start..start + 5 + end + 5]);
        out.push('\n');
        rest = &after[end + 5..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// TLS and SASL settings from client properties, Java-style (`ssl.truststore.location`,
/// `ssl.truststore.certificates`, `ssl.keystore.key`, `sasl.jaas.config`) or
/// librdkafka-style (`ssl.ca.location`, `sasl.username`); None for PLAINTEXT. What
/// cannot be honoured is refused with the key named, never silently dropped: speaking
/// PLAINTEXT to a cluster the user believes is secured would be worse.
pub fn security_from_properties(
    props: &std::collections::BTreeMap<String, String>,
) -> Result<Option<ClientSecurity>, String> {
    let get = |k: &str| {
        props
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let protocol = get("security.protocol")
        .unwrap_or_else(|| "PLAINTEXT".into())
        .to_ascii_uppercase();
    let (tls, sasl) = match protocol.as_str() {
        "PLAINTEXT" => return Ok(None),
        "SSL" => (true, false),
        "SASL_PLAINTEXT" => (false, true),
        "SASL_SSL" => (true, true),
        other => {
            return Err(format!(
                "security.protocol={other}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            ))
        }
    };
    let file = |k: &str| -> Result<Option<Vec<u8>>, String> {
        get(k).map(|p| read_file(Path::new(&p), k)).transpose()
    };
    let tls = if tls {
        for k in ["ssl.truststore.type", "ssl.keystore.type"] {
            if let Some(t) = get(k).filter(|t| !t.eq_ignore_ascii_case("PEM")) {
                return Err(format!(
                    "{k}={t}: only PEM is supported; convert the store to PEM (openssl pkcs12 -in store.p12 -nodes)"
                ));
            }
        }
        let ca = match get("ssl.truststore.certificates") {
            Some(pem) => Some(pem_value(&pem)),
            None => match file("ssl.truststore.location")? {
                Some(pem) => Some(pem),
                None => file("ssl.ca.location")?,
            },
        };
        let identity = match (
            get("ssl.keystore.certificate.chain"),
            get("ssl.keystore.key"),
        ) {
            (Some(chain), Some(key)) => Some((pem_value(&chain), pem_value(&key))),
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "ssl.keystore.certificate.chain and ssl.keystore.key go together (the client certificate and its key)"
                        .into(),
                )
            }
            (None, None) => match file("ssl.keystore.location")? {
                Some(pem) => Some((pem.clone(), pem)),
                None => match (file("ssl.certificate.location")?, file("ssl.key.location")?) {
                    (Some(c), Some(k)) => Some((c, k)),
                    _ => None,
                },
            },
        };
        let verify_hostname = props
            .get("ssl.endpoint.identification.algorithm")
            .is_none_or(|v| v.trim().eq_ignore_ascii_case("https"));
        let opts = TlsClientOptions {
            ca_pem: ca,
            identity_pem: identity,
            verify_hostname,
        };
        Some(tls_client_config(&opts)?)
    } else {
        None
    };
    let sasl = if sasl {
        let name = get("sasl.mechanism")
            .or_else(|| get("sasl.mechanisms"))
            .unwrap_or_else(|| "GSSAPI".into());
        let mechanism = SaslMechanism::from_name(&name).ok_or_else(|| {
            format!(
                "sasl.mechanism={name}: supported are PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (unsecured JWTs)"
            )
        })?;
        let jaas = get("sasl.jaas.config").unwrap_or_default();
        let mut username = get("sasl.username").or_else(|| jaas_option(&jaas, "username"));
        let mut password = props
            .get("sasl.password")
            .cloned()
            .or_else(|| jaas_option(&jaas, "password"));
        if mechanism == SaslMechanism::OAuthBearer {
            // An unsecured JWT for this principal (Kafka's and librdkafka's development mode).
            let oauth_config = get("sasl.oauthbearer.config").unwrap_or_default();
            username = jaas_option(&jaas, "unsecuredLoginStringClaim_sub")
                .or_else(|| jaas_option(&oauth_config, "principal"))
                .or(username);
            password = Some(String::new());
        }
        let (Some(username), Some(password)) = (username, password) else {
            return Err(
                "SASL needs a user name and password: sasl.username and sasl.password, or \
                 sasl.jaas.config with username=\"...\" password=\"...\""
                    .into(),
            );
        };
        Some(SaslCredentials {
            mechanism,
            username,
            password,
        })
    } else {
        None
    };
    Ok(Some(ClientSecurity { tls, sasl }))
}

/// Reads a Java-style JAAS value `username="x"` out of `sasl.jaas.config` text, a
/// lenient helper for clients (the broker has a full parser).
pub fn jaas_option(jaas: &str, key: &str) -> Option<String> {
    let mut rest = jaas;
    while let Some(i) = rest.find(key) {
        let before_ok = i == 0 || rest[..i].ends_with(|c: char| c.is_whitespace());
        let after = rest[i + key.len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(q) = v.strip_prefix('"') {
                    return q.find('"').map(|end| q[..end].to_string());
                }
                let end = v
                    .find(|c: char| c.is_whitespace() || c == ';')
                    .unwrap_or(v.len());
                return Some(v[..end].to_string());
            }
        }
        rest = &rest[i + key.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, end to end through the client.
    #[test]
    fn rfc7677_example() {
        let mut c = ScramClient::new(ScramMechanism::Sha256, "user", "pencil");
        c.client_nonce = "rOprNGfwEbeRWgbNEkqO".into();
        c.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = c.client_final(server_first).unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.verify_server_final("v=AAAA").is_err());
    }

    #[test]
    fn one_line_pem_is_put_back_on_lines() {
        let pem = "-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_value(pem), pem.as_bytes());
        let one_line = "-----BEGIN CERTIFICATE----- QUJD REVG -----END CERTIFICATE-----";
        assert_eq!(pem_value(one_line), pem.as_bytes());
        assert!(is_sensitive("sasl.jaas.config") && !is_sensitive("sasl.username"));
    }

    #[test]
    fn jaas_options_are_read() {
        let j = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="ad min" password=secret;"#;
        assert_eq!(jaas_option(j, "username").as_deref(), Some("ad min"));
        assert_eq!(jaas_option(j, "password").as_deref(), Some("secret"));
        assert_eq!(jaas_option(j, "user"), None);
    }
}
