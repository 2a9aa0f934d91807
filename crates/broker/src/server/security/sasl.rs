//! The SASL authenticator of SASL_PLAINTEXT and SASL_SSL connections (Kafka's
//! `SaslServerAuthenticator`): before authentication only ApiVersions, SaslHandshake and
//! SaslAuthenticate are served (v0 handshakes then carry raw size-prefixed tokens);
//! anything else closes the connection. Failures answer SASL_AUTHENTICATION_FAILED with
//! one message whatever went wrong, so a client never learns whether a user exists.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use runnel_client::security::{ct_eq, SaslMechanism};
use runnel_protocol::kp::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use runnel_protocol::{decode_body, parse_request, DecodeError, ParsedRequest};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::scram::{ScramServer, Step};
use crate::broker::Broker;
use crate::handlers::{self, str_bytes};
use crate::server::Conn;

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Requests a client may send before it is authenticated: a handshake, an
/// ApiVersions or two and the exchange's steps. More closes the connection.
const MAX_AUTH_FRAMES: usize = 16;

/// One listener's SASL settings.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// In the order configured (what SaslHandshake answers).
    pub mechanisms: Vec<SaslMechanism>,
    /// PLAIN's users and passwords (`user_<name>` options of the PLAIN JAAS module).
    pub plain_users: BTreeMap<String, String>,
    /// `connections.max.reauth.ms` (KIP-368): a session's lifetime; None: no limit.
    pub reauth_ms: Option<u64>,
    /// OAUTHBEARER's token validation, when it is enabled.
    pub oauth: Option<super::oauth::OAuthSettings>,
}

/// An authenticated SASL connection's session (KIP-368): when it expires, and a
/// re-authentication under way. Not thread-safe: owned by the connection's reader.
pub(crate) struct Session {
    mechanism: SaslMechanism,
    principal: Arc<str>,
    expires: Option<std::time::Instant>,
    reauth_ms: Option<u64>,
    pending: Option<Server>,
}

impl Session {
    fn new(mechanism: SaslMechanism, settings: &SaslSettings, conn: &Conn) -> Session {
        Session {
            mechanism,
            principal: conn.principal.clone(),
            expires: settings
                .reauth_ms
                .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms)),
            reauth_ms: settings.reauth_ms,
            pending: None,
        }
    }

    /// Whether the session outlived `connections.max.reauth.ms` without re-authenticating
    /// (Kafka then closes the connection at its next request).
    pub(crate) fn expired(&self) -> bool {
        self.expires.is_some_and(|t| std::time::Instant::now() >= t)
    }

    /// Handles SaslHandshake / SaslAuthenticate after authentication: a KIP-368
    /// re-authentication with the same mechanism and principal. Err: close (logged).
    pub(crate) fn reauthenticate(
        &mut self,
        broker: &Arc<Broker>,
        settings: &SaslSettings,
        req: &ParsedRequest,
        conn: &Conn,
    ) -> Result<handlers::ResponseFuture, String> {
        let name = self.mechanism.name();
        let fail = |why: String| {
            broker
                .metrics
                .record_authentication(&conn.listener, name, false);
            tracing::warn!(peer = %conn.peer, listener = %conn.listener, mechanism = name, reason = %why, "re-authentication failed");
            why
        };
        match req.api_key {
            ApiKey::SaslHandshake => {
                let body: SaslHandshakeRequest = decode_body(&req.body, req.api_version)
                    .map_err(|e| fail(format!("malformed SaslHandshake: {e}")))?;
                let same = body.mechanism.as_str() == name && req.api_version >= 1;
                let response = SaslHandshakeResponse::default()
                    .with_error_code(if same { 0 } else { ILLEGAL_SASL_STATE })
                    .with_mechanisms(vec![str_bytes(name)]);
                let bytes = handlers::encode(req, &response);
                if !same {
                    return Err(fail(
                        "re-authentication must use the same mechanism, with SaslHandshake v1"
                            .into(),
                    ));
                }
                self.pending = Some(Server::new(self.mechanism));
                Ok(Box::pin(async move { bytes }))
            }
            _ => {
                let server = self
                    .pending
                    .as_mut()
                    .ok_or_else(|| fail("SaslAuthenticate without a SaslHandshake".into()))?;
                let body: SaslAuthenticateRequest = decode_body(&req.body, req.api_version)
                    .map_err(|e| fail(format!("malformed SaslAuthenticate: {e}")))?;
                let response = match server.step(broker, settings, &body.auth_bytes) {
                    Step::Continue(out) => {
                        SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(out))
                    }
                    Step::Done(user, out) => {
                        self.pending = None;
                        if *format!("User:{user}") != *self.principal {
                            return Err(fail(format!(
                                "re-authentication as {:?} on a connection of {}",
                                shown(&user),
                                self.principal
                            )));
                        }
                        self.expires = self.reauth_ms.map(|ms| {
                            std::time::Instant::now() + std::time::Duration::from_millis(ms)
                        });
                        broker
                            .metrics
                            .record_authentication(&conn.listener, name, true);
                        tracing::debug!(peer = %conn.peer, listener = %conn.listener, mechanism = name, principal = %self.principal, "re-authenticated");
                        SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from(out))
                            .with_session_lifetime_ms(self.reauth_ms.unwrap_or(0) as i64)
                    }
                    Step::Fail(why) => {
                        // Answered (so the client sees why), then the connection closes.
                        fail(why);
                        self.expires = Some(std::time::Instant::now());
                        SaslAuthenticateResponse::default()
                            .with_error_code(SASL_AUTHENTICATION_FAILED)
                            .with_error_message(Some(str_bytes(&fail_message(name))))
                    }
                };
                let bytes = handlers::encode(req, &response);
                Ok(Box::pin(async move { bytes }))
            }
        }
    }
}

enum Server {
    Plain,
    Scram(ScramServer),
    OAuthBearer,
}

impl Server {
    fn new(m: SaslMechanism) -> Server {
        match m {
            SaslMechanism::Plain => Server::Plain,
            SaslMechanism::Scram(s) => Server::Scram(ScramServer::new(s)),
            SaslMechanism::OAuthBearer => Server::OAuthBearer,
        }
    }

    fn step(&mut self, broker: &Broker, settings: &SaslSettings, token: &[u8]) -> Step {
        match self {
            Server::Plain => plain(&settings.plain_users, token),
            Server::Scram(s) => s.step(&broker.security.scram, token),
            Server::OAuthBearer => match &settings.oauth {
                Some(o) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    super::oauth::step(o, token, now)
                }
                None => Step::Fail("OAUTHBEARER is not configured".into()),
            },
        }
    }
}

/// A client-given name as logged: at most 64 characters.
pub fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
pub(crate) fn plain(users: &BTreeMap<String, String>, token: &[u8]) -> Step {
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts[..] else {
        return Step::Fail("PLAIN token is not authzid NUL user NUL password".into());
    };
    let (Ok(user), Ok(authzid)) = (std::str::from_utf8(user), std::str::from_utf8(authzid)) else {
        return Step::Fail("PLAIN user name is not UTF-8".into());
    };
    if !authzid.is_empty() && authzid != user {
        return Step::Fail("authorization id differs from the user name".into());
    }
    // Compare against something even for an unknown user, so timing tells nothing.
    let (expected, known) = match users.get(user) {
        Some(p) => (p.as_bytes(), true),
        None => (&b"\0no such user\0"[..], false),
    };
    match (ct_eq(expected, password), known) {
        (true, true) => Step::Done(user.to_string(), Vec::new()),
        (_, false) => Step::Fail(format!("unknown user {:?}", shown(user))),
        _ => Step::Fail(format!("wrong password for user {:?}", shown(user))),
    }
}

/// Reads frames, answers in order, closes on error: what `authenticate` needs of the
/// connection.
pub(crate) struct AuthIo<'a, R, W> {
    pub(crate) reader: &'a mut BufReader<R>,
    pub(crate) writer: &'a mut W,
    pub(crate) limits: crate::server::ReadLimits,
    pub(crate) budget: &'a crate::server::connections::RequestBudget,
}

impl<R: AsyncRead + Unpin + Send, W> AuthIo<'_, R, W> {
    async fn read(&mut self) -> Result<Option<Bytes>, String> {
        let mut held = crate::server::connections::Held::default();
        crate::server::read_frame(self.reader, self.limits, self.budget, &mut held, None).await
    }
}

async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    response: Option<crate::server::response::Response>,
) -> Result<(), String> {
    match response {
        Some(r) if !r.is_empty() => {
            let b = r.to_bytes().map_err(|e| e.to_string())?;
            w.write_all(&b).await.map_err(|e| e.to_string())
        }
        _ => Err("a response could not be encoded".into()),
    }
}

fn fail_message(mechanism: &str) -> String {
    format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}")
}

/// Runs the SASL exchange; on success `conn.principal` is `User:<name>`. Errors are
/// logged and counted here; the caller closes the connection.
pub(crate) async fn authenticate<R, W>(
    broker: &Arc<Broker>,
    settings: &SaslSettings,
    mut io: AuthIo<'_, R, W>,
    conn: &mut Conn,
) -> Result<Session, ()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let listener = conn.listener.clone();
    let peer = conn.peer;
    // `mechanism` is "none" before a handshake chose one.
    let refuse = |mechanism: &str, reason: &str| {
        broker
            .metrics
            .record_authentication(&listener, mechanism, false);
        tracing::warn!(%peer, listener = %listener, mechanism, reason, "authentication failed");
    };
    // (mechanism, server, raw tokens after a v0 handshake)
    let mut session: Option<(SaslMechanism, Server, bool)> = None;
    for _ in 0..MAX_AUTH_FRAMES {
        let frame = match io.read().await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(()),
            Err(reason) => {
                refuse(session.as_ref().map_or("none", |s| s.0.name()), &reason);
                return Err(());
            }
        };
        if let Some((mech, server, true)) = &mut session {
            // v0: the frame is the token itself; the answer is a size-prefixed token.
            let name = mech.name();
            let (out, user) = match server.step(broker, settings, &frame) {
                Step::Continue(out) => (out, None),
                Step::Done(user, out) => (out, Some(user)),
                Step::Fail(why) => {
                    refuse(name, &why);
                    return Err(());
                }
            };
            let mut b = (out.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(&out);
            write(io.writer, Some(Bytes::from(b).into()))
                .await
                .map_err(|_| ())?;
            if let Some(user) = user {
                succeed(broker, conn, name, &user);
                return Ok(Session::new(*mech, settings, conn));
            }
            continue;
        }
        let req = match parse_request(frame) {
            Ok(r) => r,
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let bytes = handlers::api_versions::unsupported_version(correlation_id).await;
                write(io.writer, bytes).await.map_err(|_| ())?;
                continue;
            }
            Err(e) => {
                refuse(
                    "none",
                    &format!("malformed request before authentication: {e}"),
                );
                return Err(());
            }
        };
        match (req.api_key, &mut session) {
            (ApiKey::ApiVersions, None) => {
                let bytes = match handlers::api_versions::handle(&req) {
                    Ok(f) => f.await,
                    Err(_) => return Err(()),
                };
                write(io.writer, bytes).await.map_err(|_| ())?;
            }
            (ApiKey::SaslHandshake, None) => {
                let Ok(body) = decode_body::<SaslHandshakeRequest>(&req.body, req.api_version)
                else {
                    refuse("none", "malformed SaslHandshake");
                    return Err(());
                };
                let names: Vec<_> = settings
                    .mechanisms
                    .iter()
                    .map(|m| str_bytes(m.name()))
                    .collect();
                let wanted = body.mechanism.to_string();
                let chosen = settings
                    .mechanisms
                    .iter()
                    .find(|m| m.name() == wanted)
                    .copied();
                let code = if chosen.is_some() {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                let response = SaslHandshakeResponse::default()
                    .with_error_code(code)
                    .with_mechanisms(names);
                write(io.writer, handlers::encode(&req, &response))
                    .await
                    .map_err(|_| ())?;
                let Some(m) = chosen else {
                    // The client's word is not a metrics label (it could be anything).
                    let shown: String = wanted.chars().take(64).collect();
                    refuse(
                        "unsupported",
                        &format!("mechanism {shown:?} not enabled on this listener (UNSUPPORTED_SASL_MECHANISM)"),
                    );
                    return Err(());
                };
                let server = Server::new(m);
                session = Some((m, server, req.api_version == 0));
            }
            (ApiKey::SaslAuthenticate, Some((mech, server, false))) => {
                let name = mech.name();
                let Ok(body) = decode_body::<SaslAuthenticateRequest>(&req.body, req.api_version)
                else {
                    refuse(name, "malformed SaslAuthenticate");
                    return Err(());
                };
                let respond = |r: SaslAuthenticateResponse| handlers::encode(&req, &r);
                match server.step(broker, settings, &body.auth_bytes) {
                    Step::Continue(out) => {
                        let r =
                            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(out));
                        write(io.writer, respond(r)).await.map_err(|_| ())?;
                    }
                    Step::Done(user, out) => {
                        let r = SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from(out))
                            .with_session_lifetime_ms(settings.reauth_ms.unwrap_or(0) as i64);
                        write(io.writer, respond(r)).await.map_err(|_| ())?;
                        succeed(broker, conn, name, &user);
                        return Ok(Session::new(*mech, settings, conn));
                    }
                    Step::Fail(why) => {
                        let r = SaslAuthenticateResponse::default()
                            .with_error_code(SASL_AUTHENTICATION_FAILED)
                            .with_error_message(Some(str_bytes(&fail_message(name))));
                        let _ = write(io.writer, respond(r)).await;
                        refuse(name, &why);
                        return Err(());
                    }
                }
            }
            (ApiKey::SaslHandshake, Some(_)) | (ApiKey::SaslAuthenticate, None) => {
                illegal_state(&req, io.writer).await;
                refuse(
                    "none",
                    &format!("{:?} out of order (ILLEGAL_SASL_STATE)", req.api_key),
                );
                return Err(());
            }
            (api, _) => {
                refuse(
                    session.as_ref().map_or("none", |s| s.0.name()),
                    &format!("{api:?} request before authentication"),
                );
                return Err(());
            }
        }
    }
    refuse("none", "too many requests before authentication completed");
    Err(())
}

fn succeed(broker: &Broker, conn: &mut Conn, mechanism: &str, user: &str) {
    conn.principal = Arc::from(format!("User:{user}"));
    broker
        .metrics
        .record_authentication(&conn.listener, mechanism, true);
    tracing::debug!(peer = %conn.peer, listener = %conn.listener, mechanism, principal = %conn.principal, "authenticated");
}

async fn illegal_state<W: AsyncWrite + Unpin>(req: &ParsedRequest, w: &mut W) {
    let bytes = match req.api_key {
        ApiKey::SaslHandshake => handlers::encode(
            req,
            &SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE),
        ),
        _ => handlers::encode(
            req,
            &SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(str_bytes("SaslAuthenticate before SaslHandshake"))),
        ),
    };
    let _ = write(w, bytes).await;
}

/// SaslHandshake / SaslAuthenticate after authentication (or on a listener without
/// SASL): Kafka's KafkaApis answers ILLEGAL_SASL_STATE.
pub fn after_authentication(req: &ParsedRequest) -> Result<handlers::ResponseFuture, DecodeError> {
    match req.api_key {
        ApiKey::SaslHandshake => handlers::ready(req, &SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE)),
        _ => handlers::ready(
            req,
            &SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(str_bytes("SaslAuthenticate request received after successful authentication (or on a listener without SASL)"))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens() {
        let users = BTreeMap::from([("alice".to_string(), "pw".to_string())]);
        assert!(matches!(plain(&users, b"\0alice\0pw"), Step::Done(u, _) if u == "alice"));
        assert!(matches!(plain(&users, b"alice\0alice\0pw"), Step::Done(..)));
        assert!(
            matches!(plain(&users, b"\0alice\0nope"), Step::Fail(w) if w == "wrong password for user \"alice\"")
        );
        assert!(
            matches!(plain(&users, b"\0bob\0pw"), Step::Fail(w) if w == "unknown user \"bob\"")
        );
        for bad in [
            &b""[..],
            b"\0",
            b"a\0b\0c\0d",
            b"x\0alice\0pw",
            b"\0\xff\0pw",
        ] {
            assert!(matches!(plain(&users, bad), Step::Fail(_)));
        }
    }
}
