//! One TCP connection to one broker: framing, request headers, correlation ids and
//! pipelining (any number of requests in flight; responses are matched by correlation id).
//!
//! A [`Connection`] is a cheap handle (an `Arc`) and is thread-safe: clone it and send from
//! as many tasks as you like. A background task reads responses; when the socket fails,
//! every request in flight gets [`Error::Disconnected`] and later sends fail the same way.

use crate::error::{Error, Result};
use crate::versions::{self, BrokerVersions};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The reading and writing halves of a connection, plain TCP or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
use tokio::sync::oneshot;

/// Responses larger than this close the connection: a bound on what a broker can make
/// this process allocate.
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// Settings for a connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent in every request header.
    pub client_id: String,
    /// Bound on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Bound on waiting for each response (on top of any wait the request asks the broker
    /// for, such as a fetch's max wait).
    pub request_timeout: Duration,
    /// TLS and SASL (None: PLAINTEXT).
    pub security: Option<Arc<crate::security::ClientSecurity>>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "runnel-client".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            security: None,
        }
    }
}

/// A connection to one broker. Thread-safe; clones share the socket.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    client_id: StrBytes,
    request_timeout: Duration,
    writer: tokio::sync::Mutex<WriteHalf>,
    shared: Arc<Shared>,
    next_correlation_id: AtomicI32,
    versions: OnceLock<BrokerVersions>,
}

/// State shared with the reader task. The reader holds only this, not the writer, so that
/// dropping the last [`Connection`] closes the socket and ends the reader.
struct Shared {
    addr: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: HashMap<i32, Pending>,
    /// Set once the connection has failed; the reason is returned to later callers.
    closed: Option<String>,
}

struct Pending {
    api: ApiKey,
    response_header_version: i16,
    tx: oneshot::Sender<Result<Bytes>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` ("host:port") and asks the broker which API versions it serves.
    pub async fn connect(addr: &str, config: &ConnectionConfig) -> Result<Connection> {
        let connect = TcpStream::connect(addr);
        let stream = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    error: source,
                })
            }
            Err(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    error: source,
                });
            }
        };
        // Requests are written whole; waiting for more bytes only adds latency.
        let _ = stream.set_nodelay(true);
        let security = config.security.clone().unwrap_or_default();
        let low_water = LowWater {
            fd: security
                .tls
                .is_none()
                .then(|| std::os::fd::AsRawFd::as_raw_fd(&stream)),
            set: 1,
        };
        let (reader, writer): (ReadHalf, WriteHalf) = match &security.tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_matches(|c| c == '[' || c == ']');
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                        Error::Connect {
                            addr: addr.to_string(),
                            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                        }
                    })?;
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                let handshake = connector.connect(name, stream);
                let tls_stream = match tokio::time::timeout(config.connect_timeout, handshake).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return Err(Error::Connect {
                            addr: addr.to_string(),
                            error: std::io::Error::new(
                                e.kind(),
                                format!("TLS handshake failed: {e}"),
                            ),
                        })
                    }
                    Err(_) => {
                        return Err(Error::Connect {
                            addr: addr.to_string(),
                            error: std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "TLS handshake timed out",
                            ),
                        })
                    }
                };
                let (r, w) = tokio::io::split(tls_stream);
                (Box::new(r), Box::new(w))
            }
        };
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            state: Mutex::new(State::default()),
        });
        tokio::spawn(read_loop(shared.clone(), reader, low_water));
        let conn = Connection {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                client_id: StrBytes::from_string(config.client_id.clone()),
                request_timeout: config.request_timeout,
                writer: tokio::sync::Mutex::new(writer),
                shared,
                next_correlation_id: AtomicI32::new(1),
                versions: OnceLock::new(),
            }),
        };
        let versions = conn.negotiate_versions().await?;
        let _ = conn.inner.versions.set(versions);
        if let Some(sasl) = &security.sasl {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }

    /// The address this connection was made to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// What the broker said it serves (from ApiVersions at connect).
    pub fn broker_versions(&self) -> &BrokerVersions {
        self.inner
            .versions
            .get()
            .expect("versions are negotiated in connect")
    }

    /// Fails with [`Error::UnsupportedVersion`] unless the broker serves `api` at `version`.
    pub fn require(&self, api: ApiKey, version: i16) -> Result<()> {
        self.broker_versions()
            .require(&self.inner.addr, api, version)
    }

    /// Whether the connection has failed (every later request would fail).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.state.lock().unwrap().closed.is_some()
    }

    async fn negotiate_versions(&self) -> Result<BrokerVersions> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("runnel-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // A broker that does not serve v3 answers in v0 with UNSUPPORTED_VERSION (35) and its
        // own ranges; v0 then always works.
        let response: ApiVersionsResponse =
            match self.send_unchecked(&request, versions::API_VERSIONS).await {
                Ok(r) if r.error_code != 35 => r,
                Ok(_) | Err(Error::Protocol { .. }) => {
                    self.send_unchecked(&ApiVersionsRequest::default(), 0)
                        .await?
                }
                Err(e) => return Err(e),
            };
        Error::check(
            response.error_code,
            || format!("ApiVersions from {}", self.addr()),
            None,
        )?;
        Ok(BrokerVersions::from_response(&response))
    }

    /// SaslHandshake v1 then SaslAuthenticate until the broker accepts or refuses.
    async fn authenticate(&self, sasl: &crate::security::SaslCredentials) -> Result<()> {
        use crate::security::{SaslMechanism, ScramClient};
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mechanism = sasl.mechanism.name();
        let context = || format!("SASL {mechanism} authentication to {}", self.addr());
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let response = self.send_unchecked(&handshake, 1).await?;
        Error::check(response.error_code, context, None)?;
        let version = self
            .broker_versions()
            .range(ApiKey::SaslAuthenticate)
            .map_or(0, |(_, max)| max)
            .min(2);
        let step = |token: Vec<u8>| async move {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
            let r = self.send_unchecked(&request, version).await?;
            Error::check(
                r.error_code,
                context,
                r.error_message.as_ref().map(|m| m.to_string()),
            )?;
            Ok::<Bytes, Error>(r.auth_bytes)
        };
        let refused = |why: String| Error::Disconnected {
            addr: self.addr().to_string(),
            reason: Some(format!("{}: {why}", context())),
        };
        match sasl.mechanism {
            SaslMechanism::Plain => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password);
                step(token.into_bytes()).await?;
            }
            SaslMechanism::OAuthBearer => {
                let message = crate::security::oauthbearer_unsecured_message(&sasl.username, 3600);
                step(message).await?;
            }
            SaslMechanism::Scram(m) => {
                let mut scram = ScramClient::new(m, &sasl.username, &sasl.password);
                let server_first = step(scram.client_first().into_bytes()).await?;
                let server_first = String::from_utf8_lossy(&server_first).to_string();
                let client_final = scram.client_final(&server_first).map_err(refused)?;
                let server_final = step(client_final.into_bytes()).await?;
                scram
                    .verify_server_final(&String::from_utf8_lossy(&server_final))
                    .map_err(refused)?;
            }
        }
        Ok(())
    }

    /// Sends `request` at `version` after checking the broker serves it, and waits for the
    /// response. Many calls may be in flight at once on one connection.
    pub async fn send<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        self.require(api_key::<R>(), version)?;
        self.send_unchecked(request, version).await
    }

    /// Sends a request the broker will not answer (a produce with acks=0). Returns once the
    /// request is written to the socket.
    pub async fn send_without_response<R: Request>(&self, request: &R, version: i16) -> Result<()> {
        let api = api_key::<R>();
        self.require(api, version)?;
        let (_, frame) = self.encode(request, api, version)?;
        self.write_frame(frame).await
    }

    async fn send_unchecked<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        let api = api_key::<R>();
        let (correlation_id, frame) = self.encode(request, api, version)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.shared.state.lock().unwrap();
            if let Some(reason) = &state.closed {
                return Err(self.disconnected(Some(reason.clone())));
            }
            let response_header_version = api.response_header_version(version);
            state.pending.insert(
                correlation_id,
                Pending {
                    api,
                    response_header_version,
                    tx,
                },
            );
        }
        if let Err(e) = self.write_frame(frame).await {
            self.inner
                .shared
                .state
                .lock()
                .unwrap()
                .pending
                .remove(&correlation_id);
            return Err(e);
        }
        let mut body = match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(self.disconnected(None)),
            Err(_) => {
                // The entry stays: a late answer then finds it (and a dropped receiver)
                // instead of looking like a stream out of step.
                return Err(Error::Timeout {
                    addr: self.inner.addr.clone(),
                    api,
                    timeout: self.inner.request_timeout,
                });
            }
        };
        R::Response::decode(&mut body, version).map_err(|e| Error::Protocol {
            addr: self.inner.addr.clone(),
            api,
            detail: format!("cannot decode v{version}: {e}"),
        })
    }

    fn encode<R: Request>(&self, request: &R, api: ApiKey, version: i16) -> Result<(i32, Bytes)> {
        let correlation_id = self
            .inner
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.inner.client_id.clone()));
        let header_version = api.request_header_version(version);
        let size = header
            .compute_size(header_version)
            .map_err(encode_error(api, version))?
            + request
                .compute_size(version)
                .map_err(encode_error(api, version))?;
        let mut buf = BytesMut::with_capacity(4 + size);
        buf.put_i32(size as i32);
        header
            .encode(&mut buf, header_version)
            .map_err(encode_error(api, version))?;
        request
            .encode(&mut buf, version)
            .map_err(encode_error(api, version))?;
        debug_assert_eq!(buf.len(), 4 + size);
        Ok((correlation_id, buf.freeze()))
    }

    async fn write_frame(&self, frame: Bytes) -> Result<()> {
        let mut writer = self.inner.writer.lock().await;
        if let Some(reason) = self.inner.shared.state.lock().unwrap().closed.clone() {
            return Err(self.disconnected(Some(reason)));
        }
        if let Err(source) = writer.write_all(&frame).await {
            let reason = format!("write failed: {source}");
            self.inner.shared.fail_all(reason);
            return Err(Error::Io {
                addr: self.inner.addr.clone(),
                error: source,
            });
        }
        Ok(())
    }

    fn disconnected(&self, reason: Option<String>) -> Error {
        let reason = reason.or_else(|| self.inner.shared.state.lock().unwrap().closed.clone());
        Error::Disconnected {
            addr: self.inner.addr.clone(),
            reason,
        }
    }
}

fn encode_error<E: std::fmt::Display>(api: ApiKey, version: i16) -> impl Fn(E) -> Error {
    move |e| Error::InvalidArgument(format!("cannot encode {api:?} v{version} request: {e}"))
}

fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("every generated request has a known API key")
}

impl Shared {
    /// Marks the connection failed and answers every request in flight.
    fn fail_all(&self, reason: String) {
        let pending = {
            let mut state = self.state.lock().unwrap();
            if state.closed.is_none() {
                state.closed = Some(reason.clone());
            }
            std::mem::take(&mut state.pending)
        };
        for (_, p) in pending {
            let _ = p.tx.send(Err(Error::Disconnected {
                addr: self.addr.clone(),
                reason: Some(reason.clone()),
            }));
        }
    }
}

/// The socket's receive low-water mark (SO_RCVLOWAT) while a large response arrives: the
/// reader is woken once this many of the frame's bytes are queued, not for every segment
/// (a 1 MiB fetch response came as about 16 wake-ups of a sleeping reader, each paid by
/// the sending broker's CPU). Never more than what is left of the frame being read, so
/// the wake-up always comes; 1 (the default) between frames.
struct LowWater {
    /// A plaintext socket (TLS records do not map to the frame's bytes); open while the
    /// read loop owns the read half.
    fd: Option<std::os::fd::RawFd>,
    set: usize,
}

impl LowWater {
    /// Below this, the default.
    const MIN: usize = 128 * 1024;
    const MAX: usize = 512 * 1024;

    /// `left`: bytes of the current frame not yet received (0 between frames).
    fn expect(&mut self, left: usize) {
        let Some(fd) = self.fd else { return };
        let want = if left >= Self::MIN {
            left.min(Self::MAX)
        } else {
            1
        };
        if want == self.set {
            return;
        }
        let v = want as libc::c_int;
        // SAFETY: `fd` is this connection's socket, open while the read loop runs; the
        // option value is a c_int of the given size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            self.set = want;
        } else {
            // Only a cost: wake-ups as before.
            self.fd = None;
        }
    }
}

async fn read_loop(shared: Arc<Shared>, reader: ReadHalf, mut low_water: LowWater) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let reason = loop {
        match read_one(&shared, &mut reader, &mut low_water).await {
            Ok(()) => {}
            Err(reason) => break reason,
        }
    };
    tracing::debug!(addr = %shared.addr, %reason, "connection closed");
    shared.fail_all(reason);
}

/// Reads one response frame and hands its body to the waiting request.
async fn read_one(
    shared: &Shared,
    reader: &mut BufReader<ReadHalf>,
    low_water: &mut LowWater,
) -> std::result::Result<(), String> {
    low_water.expect(0);
    let size = match reader.read_i32().await {
        Ok(size) => size,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err("closed by the broker".into())
        }
        Err(e) => return Err(format!("read failed: {e}")),
    };
    let size = check_frame_size(size)?;
    // Read into uninitialised capacity: zero-filling large fetch responses first costs as
    // much as reading them.
    let mut body = BytesMut::with_capacity(size);
    while body.len() < size {
        let remaining = size - body.len();
        low_water.expect(remaining.saturating_sub(reader.buffer().len()));
        match reader.read_buf(&mut (&mut body).limit(remaining)).await {
            Ok(0) => {
                return Err(format!(
                    "closed by the broker mid-frame ({} of {size} bytes)",
                    body.len()
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("read failed mid-frame: {e}")),
        }
    }
    let mut body = body.freeze();
    let correlation_id = (&body[..4]).get_i32();
    let pending = shared.state.lock().unwrap().pending.remove(&correlation_id);
    let Some(pending) = pending else {
        // The stream is out of step: no later response could be trusted.
        return Err(format!(
            "response with unknown correlation id {correlation_id}"
        ));
    };
    let result = match ResponseHeader::decode(&mut body, pending.response_header_version) {
        Ok(_) => Ok(body),
        Err(e) => Err(Error::Protocol {
            addr: shared.addr.clone(),
            api: pending.api,
            detail: format!("bad response header: {e}"),
        }),
    };
    let _ = pending.tx.send(result);
    Ok(())
}

/// Validates a response size prefix.
fn check_frame_size(size: i32) -> std::result::Result<usize, String> {
    if size < 4 {
        return Err(format!(
            "response frame of {size} bytes is too short for a header"
        ));
    }
    if size as usize > MAX_RESPONSE_BYTES {
        return Err(format!(
            "response frame of {size} bytes exceeds the {MAX_RESPONSE_BYTES}-byte limit"
        ));
    }
    Ok(size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn frame_sizes_are_bounded() {
        assert!(check_frame_size(3).is_err());
        assert!(check_frame_size(-1).is_err());
        assert_eq!(check_frame_size(4), Ok(4));
        assert!(check_frame_size(i32::MAX).is_err());
    }

    /// The mark follows what is left of the frame (capped), is the default between
    /// frames, and a reader waiting on it is woken by the frame's last bytes.
    #[tokio::test]
    async fn the_receive_low_water_mark_never_exceeds_the_frame() {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let fd = client.as_raw_fd();
        let mut low_water = LowWater {
            fd: Some(fd),
            set: 1,
        };
        let mark = || {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a valid socket and an out value of the given size.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(r, 0);
            v as usize
        };
        low_water.expect(200 * 1024);
        assert_eq!(mark(), 200 * 1024);
        low_water.expect(5 << 20);
        assert_eq!(mark(), LowWater::MAX);
        low_water.expect(LowWater::MIN - 1);
        assert_eq!(mark(), 1);
        low_water.expect(0);
        assert_eq!(mark(), 1);
        // The frame's remainder, exactly the mark, arriving in small pieces.
        let left = 300 * 1024;
        low_water.expect(left);
        assert_eq!(mark(), left);
        let sender = tokio::spawn(async move {
            for chunk in vec![7u8; left].chunks(16 * 1024) {
                server.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            server
        });
        let mut got = vec![0u8; left];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
            .await
            .expect("the last byte of the frame wakes the reader")
            .unwrap();
        assert!(got.iter().all(|&b| b == 7));
        drop(sender.await.unwrap());
    }

    /// A fake broker that answers ApiVersions and then echoes nothing: checks framing,
    /// header versions and the version check against what the broker advertised.
    #[tokio::test]
    async fn negotiates_versions_with_a_fake_broker() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let size = sock.read_i32().await.unwrap();
            let mut buf = vec![0u8; size as usize];
            sock.read_exact(&mut buf).await.unwrap();
            let mut buf = Bytes::from(buf);
            let header =
                kafka_protocol::protocol::decode_request_header_from_buffer(&mut buf).unwrap();
            assert_eq!(header.request_api_key, ApiKey::ApiVersions as i16);
            assert_eq!(header.request_api_version, 3);
            let response = ApiVersionsResponse::default().with_api_keys(vec![
                kafka_protocol::messages::api_versions_response::ApiVersion::default()
                    .with_api_key(ApiKey::ApiVersions as i16)
                    .with_min_version(0)
                    .with_max_version(4),
                kafka_protocol::messages::api_versions_response::ApiVersion::default()
                    .with_api_key(ApiKey::Metadata as i16)
                    .with_min_version(0)
                    .with_max_version(9),
            ]);
            let mut body = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut body, 0)
                .unwrap();
            response.encode(&mut body, 3).unwrap();
            sock.write_i32(body.len() as i32).await.unwrap();
            sock.write_all(&body).await.unwrap();
            // Keep the socket open until the client is done.
            let _ = sock.read_i32().await;
        });
        let conn = Connection::connect(&addr, &ConnectionConfig::default())
            .await
            .unwrap();
        assert!(conn.require(ApiKey::Metadata, 9).is_ok());
        let err = conn.require(ApiKey::Metadata, 12).unwrap_err();
        assert!(err.to_string().contains("Metadata v12"), "{err}");
        assert!(err.to_string().contains("v0 to v9"), "{err}");
        let err = conn.require(ApiKey::Produce, 9).unwrap_err();
        assert!(
            err.to_string().contains("does not serve this API at all"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = Connection::connect(&addr, &ConnectionConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Connect { .. }));
        assert!(err.to_string().contains(&addr));
    }
}
