//! SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677; Kafka's `ScramSaslServer`): the
//! credential store, the server side of the exchange, and the
//! DescribeUserScramCredentials / AlterUserScramCredentials handlers.
//!
//! Credentials are kept as Kafka keeps them: salt, StoredKey, ServerKey, iterations;
//! never the password. Storage follows the dynamic group configs: on a single node
//! `__cluster_metadata/scram-credentials.json`; in a cluster the metadata log (one
//! cluster-wide config record per user and mechanism, key `scram:<MECHANISM>:<user>`),
//! so every broker authenticates every user.
//!
//! `ScramStore` is thread-safe (a read-write lock).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use runnel_client::security::{
    b64, ct_eq, nonce, random_bytes, scram_attr, scram_attrs, scram_unescape, unb64,
    ScramMechanism, SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS,
};
use runnel_protocol::kp::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use runnel_protocol::kp::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use runnel_protocol::kp::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::handlers::{off_runtime, str_bytes, ResponseFuture};

const IMAGE_KEY_PREFIX: &str = "scram:";
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

/// One stored credential.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl std::fmt::Debug for ScramCredential {
    /// Shows the iterations only: the keys are as good as the password to an attacker.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Kafka's text form (`ScramCredentialUtils.credentialToString`).
    pub fn to_text(&self) -> String {
        format!(
            "salt={},stored_key={},server_key={},iterations={}",
            b64(&self.salt),
            b64(&self.stored_key),
            b64(&self.server_key),
            self.iterations
        )
    }

    pub fn from_text(s: &str) -> Option<Self> {
        let mut salt = None;
        let mut stored = None;
        let mut server = None;
        let mut iterations = None;
        for part in s.split(',') {
            let (k, v) = part.split_once('=')?;
            match k {
                "salt" => salt = unb64(v),
                "stored_key" => stored = unb64(v),
                "server_key" => server = unb64(v),
                "iterations" => iterations = v.parse().ok(),
                _ => {}
            }
        }
        Some(ScramCredential {
            salt: salt?,
            stored_key: stored?,
            server_key: server?,
            iterations: iterations?,
        })
    }

    /// From what AlterUserScramCredentials carries (the client salts the password).
    pub fn from_salted(m: ScramMechanism, salt: &[u8], salted: &[u8], iterations: u32) -> Self {
        let (stored_key, server_key) = m.stored_and_server_key(salted);
        ScramCredential {
            salt: salt.to_vec(),
            stored_key,
            server_key,
            iterations,
        }
    }
}

type Credentials = BTreeMap<(String, ScramMechanism), ScramCredential>;

/// Every user's SCRAM credentials.
pub struct ScramStore {
    creds: RwLock<Credentials>,
    /// Keys the fake exchange for an unknown user, so its salt is stable per user and
    /// the exchange looks like a real one until the proof fails.
    secret: Vec<u8>,
}

impl Default for ScramStore {
    fn default() -> Self {
        ScramStore {
            creds: RwLock::new(BTreeMap::new()),
            secret: random_bytes(32),
        }
    }
}

impl ScramStore {
    /// Reads the `scram-credentials.json` an older single node kept in `meta_dir`
    /// (missing = none), for the import into the metadata log.
    pub fn read_legacy_file(&self, meta_dir: &std::path::Path) -> Result<(), BrokerError> {
        let path = meta_dir.join("scram-credentials.json");
        let damaged = |why: String| {
            BrokerError::new(
                ErrorCode::KafkaStorageError,
                format!("{} is damaged: {why}", path.display()),
            )
        };
        let raw: BTreeMap<String, BTreeMap<String, String>> = match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| damaged(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(BrokerError::storage(&path, e)),
        };
        let mut creds = Credentials::new();
        for (user, by_mech) in raw {
            for (mech, text) in by_mech {
                let m = ScramMechanism::from_name(&mech)
                    .ok_or_else(|| damaged(format!("unknown mechanism {mech}")))?;
                let c = ScramCredential::from_text(&text)
                    .ok_or_else(|| damaged(format!("bad credential for {user}")))?;
                creds.insert((user.clone(), m), c);
            }
        }
        *self.creds.write() = creds;
        Ok(())
    }

    pub fn get(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
        self.creds.read().get(&(user.to_string(), m)).cloned()
    }

    /// (user, mechanism, iterations) of every credential.
    pub fn list(&self) -> Vec<(String, ScramMechanism, u32)> {
        self.creds
            .read()
            .iter()
            .map(|((u, m), c)| (u.clone(), *m, c.iterations))
            .collect()
    }

    /// The metadata-log records of every credential (a single node's file being imported).
    pub fn image_records(&self) -> BTreeMap<String, Option<String>> {
        self.creds
            .read()
            .iter()
            .map(|((u, m), c)| ScramStore::image_record(u, *m, Some(c)))
            .collect()
    }

    /// The metadata-log config record for one credential (None deletes it).
    pub fn image_record(
        user: &str,
        m: ScramMechanism,
        c: Option<&ScramCredential>,
    ) -> (String, Option<String>) {
        (
            format!("{IMAGE_KEY_PREFIX}{}:{user}", m.name()),
            c.map(ScramCredential::to_text),
        )
    }

    /// In a cluster: takes every credential from the metadata image's configs.
    pub fn apply_image(&self, image_configs: &BTreeMap<String, String>) {
        let parsed: Credentials = image_configs
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(IMAGE_KEY_PREFIX)?;
                let (mech, user) = rest.split_once(':')?;
                let m = ScramMechanism::from_name(mech)?;
                match ScramCredential::from_text(v) {
                    Some(c) => Some(((user.to_string(), m), c)),
                    None => {
                        tracing::error!(
                            user,
                            mechanism = mech,
                            "malformed SCRAM credential record"
                        );
                        None
                    }
                }
            })
            .collect();
        *self.creds.write() = parsed;
    }

    /// A stand-in credential for a user that does not exist: stable salt, keys nobody
    /// can match.
    fn decoy(&self, user: &str, m: ScramMechanism) -> ScramCredential {
        let salt = m.hmac(&self.secret, user.as_bytes())[..16].to_vec();
        ScramCredential {
            salt,
            stored_key: random_bytes(m.output_len()),
            server_key: random_bytes(m.output_len()),
            iterations: SCRAM_MIN_ITERATIONS,
        }
    }
}

/// The outcome of one SASL step.
pub enum Step {
    /// Send these bytes and wait for the next token.
    Continue(Vec<u8>),
    /// Authenticated as this user; send these bytes.
    Done(String, Vec<u8>),
    /// Refused; the reason is for the log only (the client gets a generic message).
    Fail(String),
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
}

enum State {
    First,
    Final {
        user: String,
        known: bool,
        cred: ScramCredential,
        gs2_header: String,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Finished,
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> Self {
        ScramServer {
            mechanism,
            state: State::First,
        }
    }

    pub fn step(&mut self, store: &ScramStore, token: &[u8]) -> Step {
        let Ok(msg) = std::str::from_utf8(token) else {
            return Step::Fail("SCRAM message is not UTF-8".into());
        };
        match std::mem::replace(&mut self.state, State::Finished) {
            State::First => self.first(store, msg),
            State::Final {
                user,
                known,
                cred,
                gs2_header,
                nonce,
                client_first_bare,
                server_first,
            } => {
                let attrs = scram_attrs(msg);
                let expected_binding = b64(gs2_header.as_bytes());
                if scram_attr(&attrs, 'c') != Some(expected_binding.as_str()) {
                    return Step::Fail("channel binding does not match the gs2 header".into());
                }
                if scram_attr(&attrs, 'r') != Some(nonce.as_str()) {
                    // Nonces are public (they travel in the clear in SCRAM): safe to log.
                    return Step::Fail(format!(
                        "nonce does not match: got {:?}, sent {nonce:?}",
                        super::sasl::shown(scram_attr(&attrs, 'r').unwrap_or_default())
                    ));
                }
                let Some(proof) = scram_attr(&attrs, 'p').and_then(unb64) else {
                    return Step::Fail("client-final message has no valid proof".into());
                };
                let Some(without_proof) = msg.rsplit_once(",p=").map(|(w, _)| w) else {
                    return Step::Fail("client-final message has no proof".into());
                };
                let m = self.mechanism;
                let auth = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = m.hmac(&cred.stored_key, auth.as_bytes());
                if proof.len() != signature.len() {
                    return Step::Fail("proof has the wrong length".into());
                }
                let client_key: Vec<u8> =
                    proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
                if !ct_eq(&m.hash(&client_key), &cred.stored_key) || !known {
                    let user = super::sasl::shown(&user);
                    return Step::Fail(if known {
                        format!("wrong password for user {user:?}")
                    } else {
                        format!("unknown user {user:?}")
                    });
                }
                let server_signature = m.hmac(&cred.server_key, auth.as_bytes());
                Step::Done(user, format!("v={}", b64(&server_signature)).into_bytes())
            }
            State::Finished => Step::Fail("SCRAM exchange already finished".into()),
        }
    }

    fn first(&mut self, store: &ScramStore, msg: &str) -> Step {
        // gs2-header: "n," or "y," (no channel binding), optional "a=authzid", then ",".
        let mut parts = msg.splitn(3, ',');
        let (Some(cb), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Step::Fail("client-first message is malformed".into());
        };
        if cb != "n" && cb != "y" {
            return Step::Fail(format!("channel binding {cb:?} is not supported"));
        }
        let attrs = scram_attrs(bare);
        let (Some(user), Some(client_nonce)) = (
            scram_attr(&attrs, 'n').and_then(scram_unescape),
            scram_attr(&attrs, 'r'),
        ) else {
            return Step::Fail("client-first message has no user name or nonce".into());
        };
        if let Some(a) = authzid.strip_prefix("a=") {
            if scram_unescape(a).as_deref() != Some(user.as_str()) {
                return Step::Fail("authorization id differs from the user name".into());
            }
        }
        let m = self.mechanism;
        let (cred, known) = match store.get(&user, m) {
            Some(c) => (c, true),
            None => (store.decoy(&user, m), false),
        };
        let nonce = format!("{client_nonce}{}", nonce());
        let server_first = format!("r={nonce},s={},i={}", b64(&cred.salt), cred.iterations);
        self.state = State::Final {
            user,
            known,
            cred,
            gs2_header: format!("{cb},{authzid},"),
            nonce,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
        };
        Step::Continue(server_first.into_bytes())
    }
}

pub fn describe(broker: &Arc<Broker>, req: &ParsedRequest) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeUserScramCredentialsRequest = decode_body(&req.body, req.api_version)?;
    let all = broker.security.scram.list();
    let info = |user: &str| -> Vec<CredentialInfo> {
        all.iter()
            .filter(|(u, _, _)| u == user)
            .map(|(_, m, i)| {
                CredentialInfo::default()
                    .with_mechanism(m.code())
                    .with_iterations(*i as i32)
            })
            .collect()
    };
    let result = |user: &str, code: i16, message: Option<&str>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_error_code(code)
            .with_error_message(message.map(str_bytes))
            .with_credential_infos(if code == 0 { info(user) } else { Vec::new() })
    };
    let results = match &body.users {
        None => {
            let mut users: Vec<&str> = all.iter().map(|(u, _, _)| u.as_str()).collect();
            users.dedup();
            users.into_iter().map(|u| result(u, 0, None)).collect()
        }
        Some(names) => {
            let names: Vec<String> = names.iter().map(|n| n.name.to_string()).collect();
            let mut seen = std::collections::BTreeSet::new();
            let dup: std::collections::BTreeSet<&String> =
                names.iter().filter(|n| !seen.insert(*n)).collect();
            let mut done = std::collections::BTreeSet::new();
            names
                .iter()
                .filter(|n| done.insert(*n))
                .map(|n| {
                    if dup.contains(n) {
                        result(n, DUPLICATE_RESOURCE, Some("Cannot describe SCRAM credentials for the same user twice in a single request"))
                    } else if info(n).is_empty() {
                        result(n, RESOURCE_NOT_FOUND, Some("Attempt to describe a user credential that does not exist"))
                    } else {
                        result(n, 0, None)
                    }
                })
                .collect()
        }
    };
    crate::handlers::ready(
        req,
        &DescribeUserScramCredentialsResponse::default().with_results(results),
    )
}

/// Checks one upsertion as Kafka's `ControllerApis`/`ScramControlManager` do.
fn check_upsertion(
    name: &str,
    mech: i8,
    iterations: i32,
    salt: &[u8],
    salted: &[u8],
) -> Result<(ScramMechanism, ScramCredential), (i16, String)> {
    let m = ScramMechanism::from_code(mech).ok_or((
        UNSUPPORTED_SASL_MECHANISM,
        format!("Unknown SCRAM mechanism {mech}"),
    ))?;
    if name.is_empty() {
        return Err((UNACCEPTABLE_CREDENTIAL, "Username must not be empty".into()));
    }
    if iterations < SCRAM_MIN_ITERATIONS as i32 {
        return Err((
            UNACCEPTABLE_CREDENTIAL,
            format!("Too few iterations: at least {SCRAM_MIN_ITERATIONS}"),
        ));
    }
    if iterations > SCRAM_MAX_ITERATIONS as i32 {
        return Err((
            UNACCEPTABLE_CREDENTIAL,
            format!("Too many iterations: at most {SCRAM_MAX_ITERATIONS}"),
        ));
    }
    if salt.is_empty() || salted.len() != m.output_len() {
        return Err((
            UNACCEPTABLE_CREDENTIAL,
            "The salt must not be empty and the salted password must be one hash long".into(),
        ));
    }
    Ok((
        m,
        ScramCredential::from_salted(m, salt, salted, iterations as u32),
    ))
}

pub fn alter(broker: &Arc<Broker>, req: &ParsedRequest) -> Result<ResponseFuture, DecodeError> {
    let body: AlterUserScramCredentialsRequest = decode_body(&req.body, req.api_version)?;
    let broker = broker.clone();
    Ok(off_runtime(req, move || {
        let mut outcome: BTreeMap<String, Result<(), (i16, String)>> = BTreeMap::new();
        let mut changes = Vec::new();
        let mut count: BTreeMap<(String, i8), usize> = BTreeMap::new();
        for d in &body.deletions {
            *count.entry((d.name.to_string(), d.mechanism)).or_default() += 1;
        }
        for u in &body.upsertions {
            *count.entry((u.name.to_string(), u.mechanism)).or_default() += 1;
        }
        let mut fail = |user: &str, e: (i16, String)| {
            outcome.insert(user.to_string(), Err(e));
        };
        for d in &body.deletions {
            let user = d.name.to_string();
            if count[&(user.clone(), d.mechanism)] > 1 {
                fail(
                    &user,
                    (
                        DUPLICATE_RESOURCE,
                        "A user credential cannot be altered twice in the same request".into(),
                    ),
                );
                continue;
            }
            match ScramMechanism::from_code(d.mechanism) {
                None => fail(
                    &user,
                    (
                        UNSUPPORTED_SASL_MECHANISM,
                        format!("Unknown SCRAM mechanism {}", d.mechanism),
                    ),
                ),
                Some(m) if broker.security.scram.get(&user, m).is_none() => fail(
                    &user,
                    (
                        RESOURCE_NOT_FOUND,
                        "Attempt to delete a user credential that does not exist".into(),
                    ),
                ),
                Some(m) => changes.push(((user, m), None)),
            }
        }
        for u in &body.upsertions {
            let user = u.name.to_string();
            if count[&(user.clone(), u.mechanism)] > 1 {
                fail(
                    &user,
                    (
                        DUPLICATE_RESOURCE,
                        "A user credential cannot be altered twice in the same request".into(),
                    ),
                );
                continue;
            }
            match check_upsertion(
                &user,
                u.mechanism,
                u.iterations,
                &u.salt,
                &u.salted_password,
            ) {
                Ok((m, c)) => changes.push(((user, m), Some(c))),
                Err(e) => fail(&user, e),
            }
        }
        // A user with any failed change has none applied (Kafka answers per user).
        changes.retain(|((user, _), _)| !matches!(outcome.get(user), Some(Err(_))));
        let applied = apply(&broker, &changes).map_err(|e| (e.code.code(), e.message));
        for ((user, _), _) in &changes {
            outcome
                .entry(user.clone())
                .or_insert_with(|| applied.clone());
        }
        for ((user, m), c) in &changes {
            if applied.is_ok() {
                tracing::info!(
                    user,
                    mechanism = m.name(),
                    change = if c.is_some() { "upsert" } else { "delete" },
                    "SCRAM credential changed"
                );
            }
        }
        let results = outcome
            .into_iter()
            .map(|(user, r)| {
                let (code, msg) = match r {
                    Ok(()) => (0, None),
                    Err((c, m)) => (c, Some(m)),
                };
                AlterUserScramCredentialsResult::default()
                    .with_user(str_bytes(&user))
                    .with_error_code(code)
                    .with_error_message(msg.as_deref().map(str_bytes))
            })
            .collect();
        AlterUserScramCredentialsResponse::default().with_results(results)
    }))
}

/// Stores the changes through the metadata log, waiting until this broker's image has
/// them.
fn apply(
    broker: &Arc<Broker>,
    changes: &[((String, ScramMechanism), Option<ScramCredential>)],
) -> Result<(), BrokerError> {
    if changes.is_empty() {
        return Ok(());
    }
    let records: BTreeMap<String, Option<String>> = changes
        .iter()
        .map(|((u, m), c)| ScramStore::image_record(u, *m, c.as_ref()))
        .collect();
    tokio::runtime::Handle::current().block_on(broker.cluster().write_config_records(records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::security::ScramClient;

    fn exchange(
        store: &ScramStore,
        m: ScramMechanism,
        user: &str,
        password: &str,
    ) -> Result<String, String> {
        let mut client = ScramClient::new(m, user, password);
        let mut server = ScramServer::new(m);
        let Step::Continue(first) = server.step(store, client.client_first().as_bytes()) else {
            return Err("first step refused".into());
        };
        let fin = client.client_final(std::str::from_utf8(&first).unwrap())?;
        match server.step(store, fin.as_bytes()) {
            Step::Done(u, v) => {
                client.verify_server_final(std::str::from_utf8(&v).unwrap())?;
                Ok(u)
            }
            Step::Fail(why) => Err(why),
            Step::Continue(_) => Err("unexpected continue".into()),
        }
    }

    #[test]
    fn scram_round_trip_and_refusals() {
        for m in ScramMechanism::ALL {
            let store = ScramStore::default();
            let salt = random_bytes(16);
            let salted = m.salted_password("pw,=x", &salt, 4096);
            let c = ScramCredential::from_salted(m, &salt, &salted, 4096);
            assert_eq!(ScramCredential::from_text(&c.to_text()).as_ref(), Some(&c));
            let (k, v) = ScramStore::image_record("al=ice,", m, Some(&c));
            store.apply_image(&BTreeMap::from([(k, v.unwrap())]));
            assert_eq!(exchange(&store, m, "al=ice,", "pw,=x").unwrap(), "al=ice,");
            assert_eq!(
                exchange(&store, m, "al=ice,", "nope").unwrap_err(),
                "wrong password for user \"al=ice,\""
            );
            assert_eq!(
                exchange(&store, m, "bob", "pw").unwrap_err(),
                "unknown user \"bob\""
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        let store = ScramStore::default();
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"n,,",
            b"p=tls-unique,,n=a,r=b",
            b"n,,n=a",
        ] {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            assert!(matches!(s.step(&store, bad), Step::Fail(_)), "{bad:?}");
        }
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(s.step(&store, b"n,,n=a,r=b"), Step::Continue(_)));
        assert!(matches!(
            s.step(&store, b"c=biws,r=x,p=AAAA"),
            Step::Fail(_)
        ));
        assert!(matches!(s.step(&store, b"again"), Step::Fail(_)));
    }

    #[test]
    fn upsertions_are_checked_like_kafka() {
        let m = ScramMechanism::Sha256;
        let ok = vec![0u8; m.output_len()];
        assert!(check_upsertion("a", 1, 4096, b"s", &ok).is_ok());
        assert_eq!(
            check_upsertion("a", 1, 4095, b"s", &ok).unwrap_err().0,
            UNACCEPTABLE_CREDENTIAL
        );
        assert_eq!(
            check_upsertion("a", 1, 16385, b"s", &ok).unwrap_err().0,
            UNACCEPTABLE_CREDENTIAL
        );
        assert_eq!(
            check_upsertion("", 1, 4096, b"s", &ok).unwrap_err().0,
            UNACCEPTABLE_CREDENTIAL
        );
        assert_eq!(
            check_upsertion("a", 9, 4096, b"s", &ok).unwrap_err().0,
            UNSUPPORTED_SASL_MECHANISM
        );
    }
}
