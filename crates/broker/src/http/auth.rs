//! Who calls the HTTP admin API: TLS (`http.listeners=https://...`, with a client
//! certificate mapped to a principal as on an SSL listener) and HTTP authentication
//! (`http.authentication.method`: Basic against the broker's SCRAM and PLAIN users, a
//! Bearer JWT validated as OAUTHBEARER). The principal found is the request's caller
//! (`caller()`): the Kafka requests the API makes and its filtered reads run as it, so
//! the ACLs of the Kafka listeners apply unchanged.
//!
//! Unauthenticated calls get 401 with `WWW-Authenticate` (a browser opening the console
//! asks for a user and password). Failures are logged at WARN and counted in
//! `runnel_authentication_failures_total` (listener `HTTP`), never with a secret.
//!
//! Thread-safe: the verification cache is behind a mutex.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{connect_info::Connected, ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use base64::Engine as _;
use runnel_client::security::{ct_eq, random_bytes, ScramMechanism};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::{ApiError, HttpState};
use crate::broker::Broker;
use crate::server::security::scram::Step;
use crate::server::security::tls::TlsListener;
use crate::server::{Conn, ANONYMOUS};

/// The listener name the API's authentications are logged and counted under.
const LISTENER: &str = "HTTP";
/// A verified password is trusted this long without re-running PBKDF2 (unless the
/// user's SCRAM credential changed meanwhile).
const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 1024;
/// PBKDF2 rounds spent on a user without a SCRAM credential (Kafka's minimum).
const DECOY_ITERATIONS: u32 = 4096;
/// TLS handshakes under way at once; more wait in the accept loop.
const MAX_HANDSHAKES: usize = 256;

/// The caller of the request being served.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Arc<str>,
    pub peer: SocketAddr,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// The current request's caller; outside a request (tests, internal calls)
/// `User:ANONYMOUS` from `peer`.
pub fn caller(peer: SocketAddr) -> Caller {
    CALLER.try_with(Clone::clone).unwrap_or_else(|_| Caller {
        principal: Arc::from(ANONYMOUS),
        peer,
    })
}

/// The connection the API's Kafka requests and reads are authorized as: the caller's
/// principal and address, on the inter-broker listener (whose addresses the broker
/// registers, so the console shows them).
pub fn conn(broker: &Broker, peer: SocketAddr) -> Conn {
    let c = caller(peer);
    let mut conn = Conn::anonymous(
        c.peer,
        Arc::from(broker.config.listeners.inter_broker.as_str()),
    );
    conn.principal = c.principal;
    conn
}

/// What the server knows of a connection: its address and, over TLS with a client
/// certificate, the certificate's mapped principal.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert_principal: Option<Arc<str>>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Peer {
        Peer {
            addr: *s.remote_addr(),
            cert_principal: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsHttpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TlsHttpListener>) -> Peer {
        s.remote_addr().clone()
    }
}

/// The middleware: finds the caller and runs the handler as it, or answers 401.
pub async fn authenticate(State(s): State<HttpState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.clone())
        .unwrap_or(Peer {
            addr: super::actions::PEER,
            cert_principal: None,
        });
    let settings = &s.broker.config.security.http;
    let required = settings.required(req.uri().path());
    let offered = req.headers().get(header::AUTHORIZATION).cloned();
    let principal = match offered {
        Some(value) if settings.basic || settings.bearer.is_some() => {
            match verify(&s.broker, &value).await {
                Ok(p) => p,
                Err((mechanism, reason)) => {
                    s.broker
                        .metrics
                        .record_authentication(LISTENER, mechanism, false);
                    tracing::warn!(peer = %peer.addr, listener = LISTENER, mechanism, %reason, "authentication failed");
                    return unauthorized(&s.broker, "authentication failed");
                }
            }
        }
        _ => match &peer.cert_principal {
            Some(p) => p.clone(),
            None if required => {
                return unauthorized(
                    &s.broker,
                    "this API needs credentials (http.authentication.method)",
                )
            }
            None => Arc::from(ANONYMOUS),
        },
    };
    let caller = Caller {
        principal,
        peer: peer.addr,
    };
    CALLER.scope(caller, next.run(req)).await
}

/// 401 with one `WWW-Authenticate` challenge per enabled method.
fn unauthorized(broker: &Broker, message: &str) -> Response {
    let mut r = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: format!("{message}; send an Authorization header"),
    }
    .into_response();
    let settings = &broker.config.security.http;
    if settings.basic {
        r.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Runnel\", charset=\"UTF-8\""),
        );
    }
    if settings.bearer.is_some() {
        r.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"Runnel\""),
        );
    }
    r
}

/// Checks an `Authorization` header: the principal, or the mechanism and why not (for
/// the log only: the client learns nothing about which part was wrong).
async fn verify(
    broker: &Arc<Broker>,
    value: &HeaderValue,
) -> Result<Arc<str>, (&'static str, String)> {
    let settings = &broker.config.security.http;
    let text = value
        .to_str()
        .map_err(|_| ("HTTP", "the Authorization header is not ASCII".to_string()))?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") && settings.basic {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or((
                "BASIC",
                "credentials are not base64 of user:password".to_string(),
            ))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or(("BASIC", "credentials have no ':'".to_string()))?;
        let (b, user, password) = (broker.clone(), user.to_string(), password.to_string());
        let checked = tokio::task::spawn_blocking(move || check_password(&b, &user, &password))
            .await
            .unwrap_or_else(|e| Err(format!("verification task failed: {e}")));
        let user = checked.map_err(|r| ("BASIC", r))?;
        broker
            .metrics
            .record_authentication(LISTENER, "BASIC", true);
        return Ok(Arc::from(format!("User:{user}")));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        if let Some(oauth) = &settings.bearer {
            let message = format!("n,,\x01auth=Bearer {rest}\x01\x01");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            return match crate::server::security::oauth::step(oauth, message.as_bytes(), now) {
                Step::Done(principal, _) => {
                    broker
                        .metrics
                        .record_authentication(LISTENER, "BEARER", true);
                    Ok(Arc::from(format!("User:{principal}")))
                }
                Step::Fail(why) => Err(("BEARER", why)),
                Step::Continue(_) => Err(("BEARER", "token needs another step".into())),
            };
        }
    }
    Err((
        "HTTP",
        format!(
            "scheme {:?} is not enabled (http.authentication.method)",
            crate::server::security::sasl::shown(scheme)
        ),
    ))
}

/// Successful password checks: keyed by a keyed hash of user and password (never the
/// password), with the StoredKey they matched (a changed credential misses).
#[derive(Default)]
pub struct PasswordCache {
    secret: std::sync::OnceLock<Vec<u8>>,
    entries: parking_lot::Mutex<HashMap<Vec<u8>, Verified>>,
}

/// The StoredKey a password matched (None: a PLAIN user) and when.
type Verified = (Option<Vec<u8>>, Instant);

impl PasswordCache {
    fn key(&self, user: &str, password: &str) -> Vec<u8> {
        let secret = self.secret.get_or_init(|| random_bytes(32));
        let mut data = user.as_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(password.as_bytes());
        ScramMechanism::Sha256.hmac(secret, &data)
    }
}

/// The user, if `password` is theirs: a SCRAM credential (SHA-512, then SHA-256: the
/// password salted and hashed as a SCRAM client would, compared with the StoredKey),
/// then the PLAIN JAAS users of the SASL listeners.
pub fn check_password(broker: &Broker, user: &str, password: &str) -> Result<String, String> {
    let store = &broker.security.scram;
    let current = || {
        [ScramMechanism::Sha512, ScramMechanism::Sha256]
            .into_iter()
            .find_map(|m| store.get(user, m).map(|c| (m, c)))
    };
    let cache = &broker.security.http_passwords;
    let key = cache.key(user, password);
    if let Some((stored, at)) = cache.entries.lock().get(&key) {
        if at.elapsed() < CACHE_TTL && *stored == current().map(|(_, c)| c.stored_key) {
            return Ok(user.to_string());
        }
    }
    let ok = if let Some((m, cred)) = current() {
        let salted = m.salted_password(password, &cred.salt, cred.iterations);
        let (stored, _) = m.stored_and_server_key(&salted);
        ct_eq(&stored, &cred.stored_key).then_some(Some(cred.stored_key))
    } else {
        // As long as a SCRAM check (Kafka's minimum iterations), so the answer's time
        // does not tell whether a SCRAM user of that name exists.
        ScramMechanism::Sha512.salted_password(password, user.as_bytes(), DECOY_ITERATIONS);
        let settings = &broker.config.security.http;
        settings
            .plain_users
            .iter()
            .filter_map(|users| users.get(user))
            .any(|p| ct_eq(p.as_bytes(), password.as_bytes()))
            .then_some(None)
    };
    match ok {
        Some(stored) => {
            let mut entries = cache.entries.lock();
            if entries.len() >= CACHE_MAX {
                entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                if entries.len() >= CACHE_MAX {
                    entries.clear();
                }
            }
            entries.insert(key, (stored, Instant::now()));
            Ok(user.to_string())
        }
        None => Err(format!(
            "wrong password or unknown user {:?}",
            crate::server::security::sasl::shown(user)
        )),
    }
}

/// The HTTPS listener: a task accepts TCP connections and runs their TLS handshakes
/// (at most `MAX_HANDSHAKES` at once, each bounded by `request.read.timeout.ms`); axum
/// serves the finished ones.
pub struct TlsHttpListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsHttpListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsHttpListener {
    pub fn new(listener: TcpListener, tls: Arc<TlsListener>, broker: Arc<Broker>) -> Self {
        let local = listener.local_addr().unwrap_or(super::actions::PEER);
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP admin API: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (tx, tls, broker) = (tx.clone(), tls.clone(), broker.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(done) = handshake(&broker, &tls, tcp, addr).await {
                        let _ = tx.send(done).await;
                    }
                });
            }
        });
        TlsHttpListener { local, ready, task }
    }
}

/// One connection's TLS handshake and certificate principal; None (logged) on failure.
async fn handshake(
    broker: &Broker,
    tls: &TlsListener,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Peer)> {
    let bound = Duration::from_millis(broker.config.limits.request_read_timeout_ms);
    match tls.accept(tcp, bound, true).await {
        Ok((stream, name)) => {
            let cert_principal = name.map(|name| {
                broker.metrics.record_authentication(LISTENER, "SSL", true);
                Arc::from(format!("User:{name}"))
            });
            Some((
                stream,
                Peer {
                    addr,
                    cert_principal,
                },
            ))
        }
        Err(reason) => {
            broker.metrics.record_authentication(LISTENER, "SSL", false);
            tracing::warn!(peer = %addr, listener = LISTENER, mechanism = "SSL", %reason, "authentication failed: TLS handshake");
            None
        }
    }
}

impl Listener for TlsHttpListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended (it only does when aborted): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            cert_principal: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn skip_paths_and_methods() {
        let c = crate::BrokerConfig::from_pairs(&[
            (
                "http.authentication.method".to_string(),
                "basic".to_string(),
            ),
            (
                "http.authentication.skip.paths".to_string(),
                "/metrics, /v1/health".to_string(),
            ),
        ])
        .unwrap();
        let h = &c.security.http;
        assert!(h.basic && h.bearer.is_none() && h.tls.is_none());
        assert!(h.required("/v1/topics"));
        assert!(h.required("/"));
        assert!(!h.required("/metrics"));
        assert!(!h.required("/v1/health"));
        for (k, v, needle) in [
            (
                "http.authentication.method",
                "DIGEST",
                "NONE, BASIC or BEARER",
            ),
            ("http.authentication.method", "BEARER", "OAUTHBEARER"),
            ("http.authentication.skip.paths", "metrics", "path"),
            ("http.listeners", "https://127.0.0.1:0", "ssl.keystore"),
        ] {
            let e = crate::BrokerConfig::from_pairs(&[(k.to_string(), v.to_string())])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains(k), "{k}={v}: {e}");
        }
        let none = crate::BrokerConfig::default();
        assert!(!none.security.http.required("/v1/topics"));
    }
}
