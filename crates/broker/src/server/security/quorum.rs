//! The metadata quorum's port secured as Kafka secures its controller listener: the
//! first of `controller.listener.names` takes its protocol from
//! `listener.security.protocol.map`, its TLS from `listener.name.<l>.ssl.*` over `ssl.*`
//! and, for SASL_*, the mechanism from `sasl.mechanism.controller.protocol` with this
//! node's username and password from `listener.name.<l>.plain.sasl.jaas.config` (the
//! voters accept that JAAS config's `user_<name>` entries). Both the voters' Raft traffic
//! and the brokers' controller requests go through it: [`QuorumSecurity`] is the
//! `runnel_meta::transport::Transport` handed to the quorum and its clients.
//!
//! The SASL exchange on this port (it carries our JSON frames, not the Kafka protocol)
//! is Kafka's SaslHandshake v0 shape in our own framing, after TLS when the protocol is
//! SASL_SSL: the dialler sends `[len u32 BE][mechanism name]`, then tokens
//! `[len][token]`; the voter answers each token with `[len][status u8][bytes]`, status
//! 0 = authenticated, 1 = a challenge (send the next token), 2 = refused (then closes).
//! Only PLAIN is offered: SCRAM credentials live in the metadata log this port carries,
//! so a voter could not check them before it has caught up.
//!
//! Thread-safe: built once at start, shared by every connection; the TLS certificates
//! reload with the broker listeners' (`Security::reload_loop`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_client::security::{SaslCredentials, SaslMechanism};
use runnel_meta::transport::{BoxedStream, Handshake, RpcStream, Transport};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scram::Step;
use super::tls::TlsListener;
use super::Protocol;

/// The largest SASL frame either side accepts on the quorum port.
const MAX_SASL_FRAME: usize = 16 << 10;
/// Tokens a dialler may send before it is authenticated.
const MAX_SASL_STEPS: usize = 4;
/// A TLS handshake's bound on the server (the quorum bounds the whole handshake too).
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

const DONE: u8 = 0;
const CHALLENGE: u8 = 1;
const REFUSED: u8 = 2;

/// The quorum port's TLS and SASL, both sides.
pub struct QuorumSecurity {
    pub listener: String,
    pub protocol: Protocol,
    /// Server side (this node is a voter and the protocol is SSL / SASL_SSL).
    pub tls_server: Option<Arc<TlsListener>>,
    /// Client side (the protocol is SSL / SASL_SSL).
    pub tls_client: Option<tokio_rustls::TlsConnector>,
    /// Host names of the voters as `controller.quorum.voters` spells them: what the
    /// client's certificate check expects (an address with none: its IP).
    pub voter_hosts: BTreeMap<SocketAddr, String>,
    /// Server side: PLAIN's users (`user_<name>` of the controller listener's JAAS config).
    pub plain_users: Option<BTreeMap<String, String>>,
    /// Client side: `sasl.mechanism.controller.protocol` and this node's credentials.
    pub credentials: Option<SaslCredentials>,
}

pub(crate) fn kafka_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Plaintext => "PLAINTEXT",
        Protocol::Ssl => "SSL",
        Protocol::SaslPlaintext => "SASL_PLAINTEXT",
        Protocol::SaslSsl => "SASL_SSL",
    }
}

impl Transport for QuorumSecurity {
    fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> Handshake {
        let tls = self.tls_client.clone();
        let host = self
            .voter_hosts
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| addr.ip().to_string());
        let credentials = self.credentials.clone();
        Box::pin(async move {
            let mut stream: BoxedStream = match tls {
                None => Box::new(tcp),
                Some(connector) => {
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| format!("voter host {host:?}: {e}"))?;
                    let s = connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS with {host}: {e}"))?;
                    Box::new(s)
                }
            };
            if let Some(c) = credentials {
                authenticate(&mut stream, &c).await?;
            }
            Ok(stream)
        })
    }

    fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Handshake {
        let tls = self.tls_server.clone();
        let users = self.plain_users.clone();
        let listener = self.listener.clone();
        Box::pin(async move {
            let mut stream: BoxedStream = match tls {
                None => Box::new(tcp),
                Some(t) => Box::new(t.accept(tcp, TLS_HANDSHAKE, false).await?.0),
            };
            if let Some(users) = users {
                let user = serve_sasl(&mut stream, &users)
                    .await
                    .map_err(|why| format!("SASL on controller listener {listener}: {why}"))?;
                tracing::debug!(%peer, listener, principal = %format!("User:{user}"), "quorum connection authenticated");
            }
            Ok(stream)
        })
    }

    fn protocol(&self) -> &str {
        kafka_name(self.protocol)
    }
}

async fn write_frame<S: RpcStream + ?Sized>(s: &mut S, bytes: &[u8]) -> Result<(), String> {
    let mut b = (bytes.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(bytes);
    s.write_all(&b).await.map_err(|e| e.to_string())
}

async fn read_frame<S: RpcStream + ?Sized>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .await
        .map_err(|e| format!("connection closed during SASL: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_SASL_FRAME {
        return Err(format!(
            "a SASL frame of {len} bytes, above the limit of {MAX_SASL_FRAME}"
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .await
        .map_err(|e| format!("connection closed during SASL: {e}"))?;
    Ok(body)
}

/// The dialler's side (PLAIN: one token).
async fn authenticate<S: RpcStream + ?Sized>(s: &mut S, c: &SaslCredentials) -> Result<(), String> {
    let SaslMechanism::Plain = c.mechanism else {
        return Err(format!(
            "{} is not offered on the quorum port (PLAIN is)",
            c.mechanism.name()
        ));
    };
    write_frame(s, b"PLAIN").await?;
    let mut token = vec![0u8];
    token.extend_from_slice(c.username.as_bytes());
    token.push(0);
    token.extend_from_slice(c.password.as_bytes());
    write_frame(s, &token).await?;
    let answer = read_frame(s).await?;
    match answer.split_first() {
        Some((&DONE, _)) => Ok(()),
        Some((&REFUSED, why)) => Err(format!(
            "the voter refused SASL PLAIN as {:?}: {}",
            c.username,
            String::from_utf8_lossy(why)
        )),
        _ => Err("the voter answered SASL PLAIN out of turn".into()),
    }
}

/// The voter's side: returns the authenticated user. The dialler is told only that it
/// was refused, never whether the user exists.
async fn serve_sasl<S: RpcStream + ?Sized>(
    s: &mut S,
    users: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mechanism = read_frame(s).await?;
    if mechanism != b"PLAIN" {
        let shown = super::sasl::shown(&String::from_utf8_lossy(&mechanism));
        let _ = write_frame(
            s,
            &[&[REFUSED][..], b"UNSUPPORTED_SASL_MECHANISM: PLAIN only"].concat(),
        )
        .await;
        return Err(format!("mechanism {shown:?} is not offered (PLAIN is)"));
    }
    for _ in 0..MAX_SASL_STEPS {
        let token = read_frame(s).await?;
        match super::sasl::plain(users, &token) {
            Step::Done(user, _) => {
                write_frame(s, &[DONE]).await?;
                return Ok(user);
            }
            Step::Continue(challenge) => {
                write_frame(s, &[&[CHALLENGE][..], &challenge].concat()).await?;
            }
            Step::Fail(why) => {
                let _ = write_frame(
                    s,
                    &[
                        &[REFUSED][..],
                        b"SASL_AUTHENTICATION_FAILED: invalid credentials",
                    ]
                    .concat(),
                )
                .await;
                return Err(why);
            }
        }
    }
    Err("too many SASL steps".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(
        users: &[(&str, &str)],
        user: &str,
        password: &str,
    ) -> (Result<(), String>, Result<String, String>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let users: BTreeMap<String, String> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        let c = SaslCredentials {
            mechanism: SaslMechanism::Plain,
            username: user.into(),
            password: password.into(),
        };
        tokio::join!(
            authenticate(&mut client, &c),
            serve_sasl(&mut server, &users)
        )
    }

    #[tokio::test]
    async fn plain_on_the_quorum_port() {
        let (c, s) = exchange(&[("broker", "pw")], "broker", "pw").await;
        assert_eq!((c, s), (Ok(()), Ok("broker".to_string())));
        // Wrong password and unknown user look the same to the dialler.
        let (c1, s1) = exchange(&[("broker", "pw")], "broker", "bad").await;
        let (c2, s2) = exchange(&[("broker", "pw")], "nobody", "pw").await;
        assert!(c1.unwrap_err().contains("SASL_AUTHENTICATION_FAILED"));
        assert!(c2.unwrap_err().contains("SASL_AUTHENTICATION_FAILED"));
        assert!(s1.unwrap_err().contains("wrong password"));
        assert!(s2.unwrap_err().contains("unknown user"));
    }

    #[tokio::test]
    async fn a_non_sasl_dialler_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let users = BTreeMap::new();
        // A JSON RPC frame where the mechanism should be.
        let (_, s) = tokio::join!(
            write_frame(&mut client, b"{\"Controller\":\"DescribeQuorum\"}"),
            serve_sasl(&mut server, &users)
        );
        assert!(s.unwrap_err().contains("not offered"));
        // A length prefix above the limit is refused without reading it.
        let (mut client, mut server) = tokio::io::duplex(1024);
        let huge = u32::MAX.to_be_bytes();
        let (_, s) = tokio::join!(client.write_all(&huge), serve_sasl(&mut server, &users));
        assert!(s.unwrap_err().contains("above the limit"));
    }

    /// Untrusted bytes where the exchange should be: never a panic, never authenticated.
    #[tokio::test]
    async fn garbage_exchanges_are_refused() {
        let users: BTreeMap<String, String> = [("u".to_string(), "p".to_string())].into();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..300 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 3 == 0 {
                // A well-framed PLAIN mechanism, then a random token.
                let token = bytes.clone();
                bytes = [&5u32.to_be_bytes()[..], b"PLAIN"].concat();
                bytes.extend_from_slice(&(token.len() as u32).to_be_bytes());
                bytes.extend_from_slice(&token);
            }
            let (mut client, mut server) = tokio::io::duplex(4096);
            client.write_all(&bytes).await.unwrap();
            drop(client);
            let got = serve_sasl(&mut server, &users).await;
            assert!(got.is_err(), "{bytes:?} authenticated as {got:?}");
        }
    }
}
