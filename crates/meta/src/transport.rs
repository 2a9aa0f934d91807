//! How the quorum port's connections are secured: a [`Transport`] turns a connected TCP
//! stream into the stream the RPC frames travel on, on both sides (a voter accepting, a
//! voter or broker dialling). The default, [`Plaintext`], is the TCP stream itself; the
//! broker supplies TLS and SASL for a controller listener that Kafka's
//! `listener.security.protocol.map` maps to SSL or SASL_* (this crate knows no TLS).
//!
//! A transport is shared by every connection: implementations are thread-safe.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream the RPC frames travel on (TCP, or TLS over TCP).
pub trait RpcStream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> RpcStream for T {}

pub type BoxedStream = Box<dyn RpcStream>;

/// A handshake under way; `Err` says why it failed (for the log and the caller's error).
pub type Handshake = Pin<Box<dyn Future<Output = Result<BoxedStream, String>> + Send>>;

/// The security of the quorum port. `connect` runs the client side of the handshake on
/// a stream connected to voter `addr`; `accept` the server side for a stream from `peer`.
/// Both must finish or fail on their own (the caller bounds them in time too).
pub trait Transport: Send + Sync + 'static {
    fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> Handshake;
    fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Handshake;
    /// Kafka's name of the security protocol (for logs): PLAINTEXT, SSL, SASL_SSL, ...
    fn protocol(&self) -> &str;
}

/// Frames on the bare TCP stream (Kafka's PLAINTEXT).
pub struct Plaintext;

impl Transport for Plaintext {
    fn connect(&self, tcp: TcpStream, _: SocketAddr) -> Handshake {
        Box::pin(async move { Ok(Box::new(tcp) as BoxedStream) })
    }

    fn accept(&self, tcp: TcpStream, _: SocketAddr) -> Handshake {
        Box::pin(async move { Ok(Box::new(tcp) as BoxedStream) })
    }

    fn protocol(&self) -> &str {
        "PLAINTEXT"
    }
}

/// A shared [`Transport`] (cheap to clone; PLAINTEXT by default).
#[derive(Clone)]
pub struct QuorumTransport(pub Arc<dyn Transport>);

impl QuorumTransport {
    pub fn new(t: impl Transport) -> Self {
        QuorumTransport(Arc::new(t))
    }
}

impl Default for QuorumTransport {
    fn default() -> Self {
        QuorumTransport(Arc::new(Plaintext))
    }
}

impl std::fmt::Debug for QuorumTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuorumTransport({})", self.0.protocol())
    }
}

impl std::ops::Deref for QuorumTransport {
    type Target = dyn Transport;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
