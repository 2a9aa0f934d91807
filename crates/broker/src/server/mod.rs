//! The network side: accept connections, read size-prefixed frames, dispatch, and write
//! responses in request order.
//!
//! Each connection has a reader task and a writer task joined by a bounded queue of
//! response futures. The reader runs each request's synchronous part (the append of a
//! produce, say) in arrival order, so a pipelining producer's batches land in order; the
//! waiting part (fsync for acks=all, a fetch's long poll) runs in the queued future,
//! and the writer sends the responses in request order as Kafka requires.

pub mod connections;
pub mod listeners;
pub mod quota;
pub mod response;
pub mod security;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_protocol::frame::frame_body_len;
use runnel_protocol::kp::messages::ApiKey;
use runnel_protocol::{parse_request, DecodeError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::handlers::{self, ResponseFuture};
use crate::server::connections::{Held, RequestBudget};

/// Requests read ahead of their responses on one connection (Kafka clients pipeline at
/// most a handful; this bounds the memory a single client can pin).
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// What a request's handler knows of its connection.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// The listener the connection came in on: clients are told the endpoints of the
    /// same listener (Kafka's rule), so each network sees addresses it can reach.
    pub listener: Arc<str>,
    /// Who is asking, as Kafka's `KafkaPrincipal` string (`User:alice`). A connection
    /// that has not authenticated (PLAINTEXT, SSL without a client certificate) is
    /// `User:ANONYMOUS`, as in Kafka; authentication replaces it for the connection.
    pub principal: Arc<str>,
    /// Muted while a quota throttles it (KIP-219); see `quota::Mute`.
    pub mute: Arc<crate::server::quota::Mute>,
    /// The broker id a follower's replica fetches on this connection named (-1: none):
    /// when such a connection ends by EOF or reset, the controller is told at once
    /// (`Cluster::report_peer_closed`).
    pub replica_of: Arc<std::sync::atomic::AtomicI32>,
}

/// Kafka's principal for a connection that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

impl Conn {
    /// A connection that has not authenticated.
    pub fn anonymous(peer: SocketAddr, listener: Arc<str>) -> Conn {
        Conn {
            peer,
            listener,
            principal: Arc::from(ANONYMOUS),
            mute: Default::default(),
            replica_of: Arc::new(std::sync::atomic::AtomicI32::new(-1)),
        }
    }
}

/// How much of a frame is claimed and read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The connection's read buffer.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Frames up to this size are claimed and allocated whole when their first byte arrives.
const WHOLE_FRAME_BYTES: usize = 1024 * 1024;

/// A whole frame's buffer is allocated in multiples of this, so that the next frames of
/// a producer (a few bytes longer or shorter) fit the recycled buffer.
const FRAME_ALLOCATION_STEP: usize = 16 * 1024;

/// A connection that sends no frame for this long gives its recycled frame buffer back.
const SPARE_IDLE: Duration = Duration::from_millis(20);

/// One connection's recycled frame buffer: once a request of at most
/// [`WHOLE_FRAME_BYTES`] is answered and nothing else holds its bytes, the writer hands
/// its buffer back, with the request-memory claim on it, and the next frame is read into
/// it. A fresh buffer per produce request cost the broker a page fault per 4 KiB of it
/// (the allocator gives large freed blocks back to the kernel) and a quarter of the
/// produce path's CPU. The buffer stays claimed in `queued.max.request.bytes` and the
/// connection's bound while it is kept, exactly as while its request was queued, and is
/// dropped (claim and memory) once the connection is silent for [`SPARE_IDLE`]; none is
/// kept while the reader waits for room in those bounds, so it never waits on a claim
/// its own spare holds.
#[derive(Default)]
pub(crate) struct SpareFrame {
    state: parking_lot::Mutex<SpareState>,
}

#[derive(Default)]
struct SpareState {
    /// Nothing is kept: the reader is waiting for a frame longer than [`SPARE_IDLE`], or
    /// for room in the request-memory bounds (a spare's claim could be what it waits
    /// for).
    refused: bool,
    spare: Option<(Vec<u8>, Held)>,
}

impl SpareFrame {
    /// Keeps `frame`'s buffer for the next frame if nothing else holds it.
    fn recycle(&self, frame: Bytes, held: Held) {
        let Ok(buf) = frame.try_into_mut() else {
            return;
        };
        let mut buf = Vec::from(buf);
        if buf.capacity() > WHOLE_FRAME_BYTES + FRAME_ALLOCATION_STEP {
            return;
        }
        buf.clear();
        let old = {
            let mut s = self.state.lock();
            if s.refused {
                return;
            }
            s.spare.replace((buf, held))
        };
        drop(old);
    }

    fn take(&self) -> Option<(Vec<u8>, Held)> {
        self.state.lock().spare.take()
    }

    /// While `refused`, nothing is kept (and what was kept is dropped).
    fn refuse(&self, refused: bool) {
        let old = {
            let mut s = self.state.lock();
            s.refused = refused;
            if refused {
                s.spare.take()
            } else {
                None
            }
        };
        drop(old);
    }
}

pub struct Server {
    broker: Arc<Broker>,
    /// One per broker listener (`listeners` less `controller.listener.names`), by name.
    listeners: Vec<(Arc<str>, TcpListener)>,
    /// The HTTP admin API's listener (`http.listeners`), if enabled.
    http: Option<TcpListener>,
}

impl Server {
    /// Binds the listeners, then opens storage (recovering partitions).
    pub async fn start(config: BrokerConfig) -> Result<Server, BrokerError> {
        Self::start_with_clock(config, Arc::new(runnel_core::SystemClock)).await
    }

    /// [`Server::start`] with the clock the coordinators' timers and the ISR lag check
    /// read (tests pass a `ManualClock`; see `Broker::clock`).
    pub async fn start_with_clock(
        mut config: BrokerConfig,
        clock: Arc<dyn runnel_core::Clock>,
    ) -> Result<Server, BrokerError> {
        // A node without `controller.quorum.voters` is a cluster of one: its own single
        // voter (KRaft's combined mode), reached on a loopback port chosen now, so that
        // topics and configs come from the metadata log as in any cluster.
        let quorum_listener = if config.cluster.voters.is_empty() {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
                BrokerError::new(
                    crate::error::ErrorCode::UnknownServerError,
                    format!("cannot bind a loopback port for the single-node metadata quorum: {e}"),
                )
            })?;
            let addr = listener.local_addr().map_err(|e| {
                BrokerError::new(crate::error::ErrorCode::UnknownServerError, e.to_string())
            })?;
            config.cluster.voters = vec![(config.node_id, addr)];
            config.cluster.single_voter = true;
            config.cluster.controller_role = true;
            config.cluster.broker_role = true;
            Some(listener)
        } else {
            None
        };
        let mut listeners = Vec::new();
        let mut endpoints = std::collections::BTreeMap::new();
        for e in &config.listeners.broker {
            let cannot = |why: String| {
                BrokerError::new(
                    crate::error::ErrorCode::UnknownServerError,
                    format!("cannot listen on {e} (listeners): {why}"),
                )
            };
            let addr = e.bind_addr().map_err(cannot)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|err| cannot(err.to_string()))?;
            let bound = listener
                .local_addr()
                .map_err(|err| cannot(err.to_string()))?;
            let advertised = &config.listeners.advertised[&e.name];
            let host = if advertised.host.is_empty() {
                bound.ip().to_string()
            } else {
                advertised.host.clone()
            };
            // Port 0 in `listeners` (a free port) is advertised as the bound port.
            let port = match advertised.port {
                0 => bound.port(),
                p => p,
            };
            endpoints.insert(e.name.clone(), (host, port));
            listeners.push((Arc::<str>::from(e.name.as_str()), listener));
        }
        let http = crate::http::bind(&config).await?;
        let broker =
            tokio::task::spawn_blocking(move || Broker::open_with_clock(config, endpoints, clock))
                .await
                .map_err(|e| {
                    BrokerError::new(crate::error::ErrorCode::UnknownServerError, e.to_string())
                })??;
        let broker = Arc::new(broker);
        crate::cluster::Cluster::start(&broker, quorum_listener).await?;
        Ok(Server {
            broker,
            listeners,
            http,
        })
    }

    /// The address of the first broker listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0]
            .1
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Every broker listener's name and bound address.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(name, l)| Some((name.to_string(), l.local_addr().ok()?)))
            .collect()
    }

    /// The HTTP admin API's bound address, when it is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` completes, then closes every partition cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let broker = self.broker.clone();
        let maintenance = tokio::spawn(maintenance_loop(broker.clone()));
        let group_timers = tokio::spawn(group_timer_loop(broker.clone()));
        let txn_timers = tokio::spawn(txn_timer_loop(broker.clone()));
        let tls_reload = tokio::spawn(crate::server::security::Security::reload_loop(
            broker.clone(),
        ));
        let mirroring = tokio::spawn(crate::mirror::run(broker.clone()));
        let http = self.http.map(|l| {
            let kafka_addr = self.listeners[0].1.local_addr().ok();
            tokio::spawn(crate::http::serve(l, broker.clone(), kafka_addr))
        });
        let accepts: Vec<_> = self
            .listeners
            .into_iter()
            .map(|(name, l)| tokio::spawn(accept_loop(name, l, broker.clone())))
            .collect();
        shutdown.await;
        for a in accepts {
            a.abort();
        }
        maintenance.abort();
        group_timers.abort();
        txn_timers.abort();
        tls_reload.abort();
        mirroring.abort();
        crate::mirror::stop_all(&broker);
        if let Some(h) = http {
            h.abort();
        }
        let cluster = broker.cluster();
        if broker.config.cluster.controlled_shutdown {
            cluster.controlled_shutdown(&broker).await;
        }
        cluster.shutdown().await;
        tracing::info!("shutting down: closing partitions");
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.topics.close_all()).await;
    }
}

/// Accepts connections on one listener, forever.
async fn accept_loop(name: Arc<str>, listener: TcpListener, broker: Arc<Broker>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let conn = Conn::anonymous(peer, name.clone());
                tokio::spawn(serve_connection(broker.clone(), stream, conn));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Retention and time-based flushing, on Kafka's schedules.
async fn maintenance_loop(broker: Arc<Broker>) {
    let retention_every = Duration::from_millis(broker.config.retention_check_interval_ms);
    let flush_every = broker.config.flush_interval_ms.map(Duration::from_millis);
    let tick = flush_every.map_or(retention_every, |f| f.min(retention_every));
    let cleaner_every = Duration::from_millis(broker.config.cleaner_backoff_ms);
    let tick = tick.min(cleaner_every);
    let mut last_retention = tokio::time::Instant::now();
    let mut last_clean = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        if last_clean.elapsed() >= cleaner_every {
            last_clean = tokio::time::Instant::now();
            let b = broker.clone();
            if let Ok(s) = tokio::task::spawn_blocking(move || b.topics.compact_all()).await {
                if s.segments_rewritten > 0 {
                    tracing::info!(
                        segments = s.segments_rewritten,
                        removed = s.records_removed,
                        kept = s.records_kept,
                        bytes_before = s.bytes_before,
                        bytes_after = s.bytes_after,
                        "compacted"
                    );
                }
            }
        }
        if flush_every.is_some() {
            let b = broker.clone();
            let _ = tokio::task::spawn_blocking(move || b.topics.flush_all()).await;
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = tokio::time::Instant::now();
            let b = broker.clone();
            if let Ok(n) = tokio::task::spawn_blocking(move || b.topics.apply_retention()).await {
                if n > 0 {
                    tracing::info!(segments = n, "retention deleted segments");
                }
            }
        }
    }
}

/// Aborts transactions that outlived their timeout.
async fn txn_timer_loop(broker: Arc<Broker>) {
    let mut interval = tokio::time::interval(Duration::from_millis(
        broker.txns.config.abort_check_interval_ms,
    ));
    loop {
        interval.tick().await;
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.txns.abort_timed_out(&b)).await;
    }
}

/// Drives the group coordinator's deadlines (join, sync, session, offset expiry): wakes
/// at the earliest deadline, and at least every 100 ms for the ones created meanwhile
/// (a new deadline is never nearer than that: session timeouts are far longer).
async fn group_timer_loop(broker: Arc<Broker>) {
    const MAX_SLEEP: Duration = Duration::from_millis(100);
    loop {
        let next = broker.groups.tick(&broker.topics);
        crate::coordinators::share::persist::tick(&broker);
        let now = broker.clock.now();
        let sleep = next.map_or(MAX_SLEEP, |t| {
            t.saturating_duration_since(now).min(MAX_SLEEP)
        });
        tokio::time::sleep(sleep.max(Duration::from_millis(1))).await;
    }
}

/// Records the request's latency (to its response, or to its end for acks=0) per API.
fn timed(broker: Arc<Broker>, api: i16, response: ResponseFuture) -> ResponseFuture {
    let start = std::time::Instant::now();
    Box::pin(async move {
        let r = response.await;
        broker.metrics.record_request(api, start.elapsed(), false);
        r
    })
}

async fn serve_connection(broker: Arc<Broker>, stream: TcpStream, conn: Conn) {
    let peer = conn.peer;
    let _slot = match broker.connections.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            tracing::warn!(%peer, reason = %why, "refusing connection");
            return;
        }
    };
    broker.metrics.connection_opened();
    let _ = stream.set_nodelay(true);
    match broker.security.tls(&conn.listener) {
        None => {
            let (r, w) = stream.into_split();
            serve_connection_inner(broker.clone(), r, w, conn).await;
        }
        Some(tls) => {
            let mut conn = conn;
            if let Some(stream) = tls_handshake(&broker, tls, stream, &mut conn).await {
                let (r, w) = tokio::io::split(stream);
                serve_connection_inner(broker.clone(), r, w, conn).await;
            }
        }
    }
    broker.metrics.connection_closed();
}

/// The TLS handshake, bounded by `request.read.timeout.ms` (a client that connects and
/// sends nothing holds no task for longer). On an SSL listener the client certificate,
/// if any, names the principal. None: refused (logged and counted).
async fn tls_handshake(
    broker: &Broker,
    tls: &crate::server::security::tls::TlsListener,
    stream: TcpStream,
    conn: &mut Conn,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let bound = Duration::from_millis(broker.config.limits.request_read_timeout_ms);
    let sasl = broker
        .config
        .security
        .listeners
        .get(&*conn.listener)
        .is_some_and(|l| l.protocol.sasl());
    match tls.accept(stream, bound, !sasl).await {
        Ok((stream, name)) => {
            if let Some(name) = name {
                conn.principal = Arc::from(format!("User:{name}"));
                broker
                    .metrics
                    .record_authentication(&conn.listener, "SSL", true);
                tracing::info!(peer = %conn.peer, listener = %conn.listener, principal = %conn.principal, "TLS client authenticated");
            }
            Some(stream)
        }
        Err(reason) => {
            broker
                .metrics
                .record_authentication(&conn.listener, "SSL", false);
            tracing::warn!(peer = %conn.peer, listener = %conn.listener, mechanism = "SSL", %reason, "authentication failed: TLS handshake");
            None
        }
    }
}

/// Per-connection timing bounds, from the broker's config.
#[derive(Clone, Copy)]
pub(crate) struct ReadLimits {
    /// Largest frame (`socket.request.max.bytes`).
    max_frame: usize,
    /// Wait for the next frame's first byte (`connections.max.idle.ms`).
    idle: Duration,
    /// From a frame's first byte to its last (`request.read.timeout.ms`).
    frame: Duration,
}

async fn serve_connection_inner<R, W>(
    broker: Arc<Broker>,
    read_half: R,
    mut write_half: W,
    mut conn: Conn,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: crate::server::response::ResponseSink + 'static,
{
    let peer = conn.peer;
    let limits = &broker.config.limits;
    let read_limits = ReadLimits {
        max_frame: broker.config.socket_request_max_bytes,
        idle: Duration::from_millis(limits.connections_max_idle_ms),
        frame: Duration::from_millis(limits.request_read_timeout_ms),
    };
    let budget = broker.connections.budget();
    // Small: whatever it holds of a large frame is copied into the frame once more,
    // while the rest goes straight from the socket into the frame (read_frame); 16 KiB
    // still holds many pipelined small requests.
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let sasl = broker
        .config
        .security
        .listeners
        .get(&*conn.listener)
        .and_then(|l| l.sasl.as_ref());
    let mut session = None;
    if let Some(settings) = sasl {
        let io = crate::server::security::sasl::AuthIo {
            reader: &mut reader,
            writer: &mut write_half,
            limits: read_limits,
            budget: &budget,
        };
        match crate::server::security::sasl::authenticate(&broker, settings, io, &mut conn).await {
            Ok(s) => session = Some(s),
            Err(()) => {
                let _ = write_half.shutdown().await;
                return;
            }
        }
    }
    let conn = conn;
    let (tx, mut rx) = mpsc::channel::<(ResponseFuture, Held, Bytes)>(MAX_IN_FLIGHT_PER_CONNECTION);
    let spare = Arc::new(SpareFrame::default());
    let writer_spare = spare.clone();
    let writer = tokio::spawn(async move {
        while let Some((response, held, frame)) = rx.recv().await {
            let bytes = response.await;
            // The request's bytes count against the memory bounds until it is answered
            // (or, recycled, until the next frame takes them over).
            writer_spare.recycle(frame, held);
            match bytes {
                Some(r) if r.is_empty() => {
                    // handlers::UNENCODABLE: an answer is missing; a client would take
                    // the next response for it, so the connection ends here (logged
                    // where the encoding failed).
                    break;
                }
                Some(r) => {
                    if let Err(e) = r.write_to(&mut write_half).await {
                        // A segment cut under a fetch's feet (a follower's truncation)
                        // leaves the response short of what its framing promised: the
                        // connection ends, as in Kafka.
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            tracing::warn!(%peer, error = %e, "closing connection");
                        }
                        return;
                    }
                }
                None => {}
            }
        }
        let _ = write_half.shutdown().await;
    });
    // Whether the peer ended the connection (EOF, a reset, or silence), not this side.
    let mut ended_by_peer = false;
    loop {
        let mut held = Held::default();
        let frame =
            match read_frame(&mut reader, read_limits, &budget, &mut held, Some(&spare)).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    ended_by_peer = true;
                    break;
                }
                Err(reason) => {
                    tracing::warn!(%peer, %reason, "closing connection");
                    ended_by_peer = true;
                    break;
                }
            };
        // A quota's throttle: the next request waits out the mute (KIP-219).
        conn.mute.wait().await;
        let whole = frame.clone();
        let response = match parse_request(frame) {
            Ok(request) if session.is_some() => {
                // KIP-368: an expired session closes; a re-authentication is served here.
                let (s, settings) = (
                    session.as_mut().expect("checked"),
                    sasl.expect("with a session"),
                );
                let sasl_request = matches!(
                    request.api_key,
                    ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
                );
                if s.expired() && !sasl_request {
                    tracing::info!(%peer, listener = %conn.listener, principal = %conn.principal, "closing connection: SASL session expired (connections.max.reauth.ms)");
                    break;
                }
                let result = if sasl_request {
                    s.reauthenticate(&broker, settings, &request, &conn)
                        .map_err(|_| ())
                } else {
                    handlers::dispatch(&broker, request.clone(), &conn).map_err(|e| {
                        tracing::warn!(%peer, error = %e, "closing connection: bad request body");
                    })
                };
                match result {
                    Ok(response) => timed(broker.clone(), request.api_key as i16, response),
                    Err(()) => break,
                }
            }
            Ok(request) => {
                let api = request.api_key as i16;
                // Moved, not cloned: once answered, nothing else holds the frame and
                // its buffer is recycled.
                match handlers::dispatch(&broker, request, &conn) {
                    Ok(response) => timed(broker.clone(), api, response),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "closing connection: bad request body");
                        break;
                    }
                }
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version,
                correlation_id,
            }) => {
                // Kafka's rule: answer with the version table in a v0 body so the client
                // can pick a version we speak.
                tracing::debug!(%peer, version, "ApiVersions version unsupported; answering v0");
                handlers::api_versions::unsupported_version(correlation_id)
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        if tx.send((response, held, whole)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
    // A follower's replica fetch connection that ended may mean its process is gone: the
    // controller probes its port (an idle close of a live follower's connection costs a
    // probe that its port accepts).
    let replica = conn.replica_of.load(std::sync::atomic::Ordering::Relaxed);
    if ended_by_peer && replica >= 0 && replica != broker.node_id() {
        broker.cluster().report_peer_closed(replica);
    }
}

/// Reads one frame body. Ok(None) on a clean end of stream between frames.
///
/// The body buffer grows as bytes arrive (never sized from the untrusted prefix alone),
/// and each byte is claimed from the connection's and the broker's request-memory
/// bounds before more is read. A connection silent for `idle` between frames, or a
/// frame not complete within `frame` of its first byte, is closed.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    limits: ReadLimits,
    budget: &RequestBudget,
    held: &mut Held,
    spare: Option<&SpareFrame>,
) -> Result<Option<Bytes>, String> {
    let mut prefix = [0u8; 4];
    let first_byte = async {
        if let Some(spare) = spare {
            match tokio::time::timeout(SPARE_IDLE, reader.read_u8()).await {
                Ok(r) => return r,
                Err(_) => spare.refuse(true),
            }
        }
        reader.read_u8().await
    };
    let first = tokio::time::timeout(limits.idle, first_byte).await;
    if let Some(spare) = spare {
        spare.refuse(false);
    }
    let first = match first {
        Err(_) => {
            // Routine, as in Kafka: closed without a warning.
            tracing::debug!(
                idle_ms = limits.idle.as_millis() as u64,
                "closing an idle connection (connections.max.idle.ms)"
            );
            return Ok(None);
        }
        Ok(Ok(b)) => b,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.to_string()),
    };
    prefix[0] = first;
    let deadline = tokio::time::Instant::now() + limits.frame;
    let rest = async {
        reader
            .read_exact(&mut prefix[1..])
            .await
            .map_err(|e| format!("truncated frame size: {e}"))?;
        let len = frame_body_len(prefix, limits.max_frame).map_err(|e| e.to_string())?;
        // A frame of up to WHOLE_FRAME_BYTES (a produce request as clients batch them) is
        // claimed and allocated whole once its first byte is here: growing it by doubling
        // copied each frame most of a time over (a third of the produce path's CPU went
        // to that copy and the page faults of its fresh memory). A larger frame grows a
        // claimed chunk at a time as its bytes arrive.
        let step = if len <= WHOLE_FRAME_BYTES {
            reader
                .fill_buf()
                .await
                .map_err(|e| format!("truncated frame of {len} bytes: {e}"))?;
            len
        } else {
            READ_CHUNK
        };
        let mut body: Vec<u8> = Vec::new();
        // Bytes already claimed for this frame: the recycled buffer's claim.
        let mut credit = 0usize;
        if let Some((buf, claim)) = spare.and_then(SpareFrame::take) {
            if step == len && buf.capacity() >= len {
                body = buf;
                credit = claim.bytes();
                held.absorb(claim);
            }
        }
        while body.len() < len {
            let want = (len - body.len()).min(step);
            // No buffer the writer hands back meanwhile may hold a claim this waits for.
            if let Some(spare) = spare {
                spare.refuse(true);
            }
            budget.claim(held, want.saturating_sub(credit)).await;
            if let Some(spare) = spare {
                spare.refuse(false);
            }
            credit = credit.saturating_sub(want);
            if body.capacity() - body.len() < want {
                let grow = if step == len {
                    // Whole, rounded up so that the next frames fit it when recycled.
                    len.next_multiple_of(FRAME_ALLOCATION_STEP)
                } else {
                    // Double, but never past the frame's length.
                    body.capacity().max(want).min(len - body.len())
                };
                body.reserve_exact(grow);
            }
            let target = body.len() + want;
            // What the BufReader already holds, then straight from the socket into the
            // frame: large frames are copied once, not through the reader's buffer.
            let buffered = reader.buffer();
            let take = buffered.len().min(target - body.len());
            body.extend_from_slice(&buffered[..take]);
            std::pin::Pin::new(&mut *reader).consume(take);
            while body.len() < target {
                let mut chunk = reader.get_mut().take((target - body.len()) as u64);
                let n = chunk
                    .read_buf(&mut body)
                    .await
                    .map_err(|e| format!("truncated frame of {len} bytes: {e}"))?;
                if n == 0 {
                    return Err(format!(
                        "truncated frame: {} of {len} bytes before the end of the stream",
                        body.len()
                    ));
                }
            }
        }
        Ok(Some(Bytes::from(body)))
    };
    match tokio::time::timeout_at(deadline, rest).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "a frame was not complete {} ms after its first byte (request.read.timeout.ms)",
            limits.frame.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::connections::Connections;
    use tokio::io::AsyncWriteExt;

    async fn next<R: AsyncRead + Unpin>(
        reader: &mut BufReader<R>,
        limits: ReadLimits,
        budget: &RequestBudget,
        spare: &SpareFrame,
    ) -> (Bytes, Held) {
        let mut held = Held::default();
        let f = read_frame(reader, limits, budget, &mut held, Some(spare))
            .await
            .unwrap()
            .unwrap();
        (f, held)
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    /// An answered frame's buffer is read into again, with its claim; a frame that
    /// something still holds is not recycled; a silent connection gives the buffer and
    /// its claim back.
    #[tokio::test]
    async fn a_connection_reuses_its_answered_frame_buffer() {
        let limits = ReadLimits {
            max_frame: 1 << 20,
            idle: Duration::from_secs(10),
            frame: Duration::from_secs(10),
        };
        let connections = Connections::new(&crate::config::RequestLimits::default(), None);
        let budget = connections.budget();
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, server);
        let (_client_read, mut client) = tokio::io::split(client);
        let spare = SpareFrame::default();
        let a = vec![1u8; 200 * 1024];
        let b = vec![2u8; 200 * 1024 + 10];
        for body in [&a, &b, &a] {
            client.write_all(&frame(body)).await.unwrap();
        }

        let (first, held) = next(&mut reader, limits, &budget, &spare).await;
        assert_eq!(first[..], a[..]);
        assert_eq!(held.bytes(), a.len());
        let at = first.as_ptr();
        spare.recycle(first, held);

        // A few bytes longer: it fits the rounded-up buffer, and claims only the rest.
        let (second, held) = next(&mut reader, limits, &budget, &spare).await;
        assert_eq!(second[..], b[..]);
        assert_eq!(second.as_ptr(), at, "read into the recycled buffer");
        assert_eq!(held.bytes(), b.len());
        // Still held elsewhere (a slice of the request): not recycled.
        let kept = second.slice(10..20);
        spare.recycle(second, held);
        assert!(spare.take().is_none());
        drop(kept);

        let (third, held) = next(&mut reader, limits, &budget, &spare).await;
        assert_eq!(third[..], a[..]);
        spare.recycle(third, held);
        assert!(spare.state.lock().spare.is_some());

        // Silence: the spare goes, and no answer recycled meanwhile is kept.
        let mut held = Held::default();
        let idle = tokio::time::timeout(
            SPARE_IDLE * 5,
            read_frame(&mut reader, limits, &budget, &mut held, Some(&spare)),
        )
        .await;
        assert!(idle.is_err(), "no frame was sent");
        assert!(spare.state.lock().spare.is_none());
        spare.recycle(Bytes::from(vec![0u8; 1024]), Held::default());
        assert!(spare.state.lock().spare.is_none());
    }
}
