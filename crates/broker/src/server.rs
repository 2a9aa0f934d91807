//! The network side: accept connections, read size-prefixed frames, dispatch, and write
//! responses in request order.
//!
//! Each connection has a reader task and a writer task joined by a bounded queue of
//! response futures. The reader runs each request's synchronous part (the append of a
//! produce, say) in arrival order, so a pipelining producer's batches land in order; the
//! waiting part (fsync for acks=all, a fetch's long poll) runs in the queued future,
//! and the writer sends the responses in request order as Kafka requires.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use runnel_protocol::frame::frame_body_len;
use runnel_protocol::kp::messages::ApiKey;
use runnel_protocol::{parse_request, DecodeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::handlers::{self, ResponseFuture};

/// Requests read ahead of their responses on one connection (Kafka clients pipeline at
/// most a handful; this bounds the memory a single client can pin).
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

pub struct Server {
    broker: Arc<Broker>,
    listener: TcpListener,
    /// The HTTP admin API's listener (`http.listeners`), if enabled.
    http: Option<TcpListener>,
}

impl Server {
    /// Binds the listener, then opens storage (recovering partitions).
    pub async fn start(config: BrokerConfig) -> Result<Server, BrokerError> {
        let listener = TcpListener::bind(config.listener).await.map_err(|e| {
            BrokerError::new(
                crate::error::ErrorCode::UnknownServerError,
                format!("cannot listen on {} (listeners): {e}", config.listener),
            )
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| BrokerError::storage(std::path::Path::new("listener"), e))?;
        let http = crate::http::bind(&config).await?;
        let (host, port) = match &config.advertised {
            Some((h, p)) => (h.clone(), if *p == 0 { bound.port() } else { *p }),
            None => (bound.ip().to_string(), bound.port()),
        };
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, host, port))
            .await
            .map_err(|e| {
                BrokerError::new(crate::error::ErrorCode::UnknownServerError, e.to_string())
            })??;
        let broker = Arc::new(broker);
        if broker.config.cluster.is_clustered() {
            let cluster = crate::cluster::Cluster::start(&broker).await?;
            let _ = broker.cluster.set(cluster);
        }
        Ok(Server {
            broker,
            listener,
            http,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
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
        let http = self.http.map(|l| {
            let kafka_addr = self.listener.local_addr().ok();
            tokio::spawn(crate::http::serve(l, broker.clone(), kafka_addr))
        });
        let accept = async {
            loop {
                match self.listener.accept().await {
                    Ok((stream, peer)) => {
                        tokio::spawn(serve_connection(broker.clone(), stream, peer));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = shutdown => {}
        }
        maintenance.abort();
        group_timers.abort();
        txn_timers.abort();
        if let Some(h) = http {
            h.abort();
        }
        if let Some(cluster) = broker.cluster() {
            if broker.config.cluster.controlled_shutdown {
                cluster.controlled_shutdown(&broker).await;
            }
            cluster.shutdown().await;
        }
        tracing::info!("shutting down: closing partitions");
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.topics.close_all()).await;
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
        let now = std::time::Instant::now();
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

async fn serve_connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    broker.metrics.connection_opened();
    serve_connection_inner(broker.clone(), stream, peer).await;
    broker.metrics.connection_closed();
}

async fn serve_connection_inner(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<ResponseFuture>(MAX_IN_FLIGHT_PER_CONNECTION);
    let writer = tokio::spawn(async move {
        while let Some(response) = rx.recv().await {
            if let Some(bytes) = response.await {
                if write_half.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
        let _ = write_half.shutdown().await;
    });
    let max = broker.config.socket_request_max_bytes;
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    loop {
        let frame = match read_frame(&mut reader, max).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(reason) => {
                tracing::warn!(%peer, %reason, "closing connection");
                break;
            }
        };
        let response = match parse_request(frame) {
            Ok(request) => match handlers::dispatch(&broker, request.clone(), peer) {
                Ok(response) => timed(broker.clone(), request.api_key as i16, response),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing connection: bad request body");
                    break;
                }
            },
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
        if tx.send(response).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Reads one frame body. Ok(None) on a clean end of stream between frames.
async fn read_frame(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    max: usize,
) -> Result<Option<Bytes>, String> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = frame_body_len(prefix, max).map_err(|e| e.to_string())?;
    let mut body = BytesMut::zeroed(len);
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("truncated frame of {len} bytes: {e}"))?;
    Ok(Some(body.freeze()))
}
