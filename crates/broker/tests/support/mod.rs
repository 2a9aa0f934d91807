//! In-process brokers for tests: each node is a `runnel_broker::Server` on its own tokio
//! runtime and its own temp data dir, started with a clock the test chooses (a
//! `ManualClock` makes the coordinators' timeouts run in test time).
//!
//! A node can be crashed (`Node::crash`): its runtime is dropped without waiting, so
//! every async task, connection and listener ends at once and the files stay as they
//! were (as after `kill -9`: what was written is in the page cache, nothing more is
//! flushed; a step already running in the blocking pool finishes first, as if the kill
//! came a moment later), and then restarted on the same data dir and ports once the
//! old broker is gone (it holds the data dir's lock).
//!
//! Thread-safety: a `Node` is driven from one test thread; it must not be crashed or
//! started from inside an async context (starting blocks the calling thread).
#![allow(dead_code)] // Each test file uses a part of this.

pub mod history;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use runnel_broker::{Broker, BrokerConfig, Server};
use runnel_core::Clock;

/// How long a node may take to start (open its files, join the quorum).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a crashed node's broker may take to be dropped (tasks in the blocking pool
/// finish what they were doing; the data dir's lock is released with the broker).
const DROP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Node {
    pub id: i32,
    /// The Kafka listener's port (fixed for a cluster node; 0 = chosen at start for a
    /// lone node).
    pub port: u16,
    /// The quorum port (`controller.quorum.voters`); None for a lone node (its own voter).
    pub controller_port: Option<u16>,
    pub dir: PathBuf,
    /// Config pairs (later ones win), without the node's identity, listener and dirs.
    pub config: Vec<(String, String)>,
    pub clock: Arc<dyn Clock>,
    /// A separate inter-broker listener (REPLICATION): (bound port, advertised port).
    /// The advertised port is a `Proxy` the test can freeze.
    pub replication: Option<(u16, u16)>,
    voters: String,
    running: Option<Running>,
}

struct Running {
    runtime: tokio::runtime::Runtime,
    broker: Weak<Broker>,
    addr: String,
}

impl Node {
    /// A single node (its own one-voter quorum) on a free port.
    pub fn lone(dir: PathBuf, config: &[(&str, &str)], clock: Arc<dyn Clock>) -> Node {
        Node {
            id: 1,
            port: 0,
            controller_port: None,
            dir,
            config: pairs(config),
            clock,
            replication: None,
            voters: String::new(),
            running: None,
        }
    }

    fn broker_config(&self) -> BrokerConfig {
        let mut all = self.config.clone();
        all.extend(pairs(&[
            ("node.id", &self.id.to_string()),
            ("listeners", &format!("PLAINTEXT://127.0.0.1:{}", self.port)),
            ("log.dirs", &self.dir.display().to_string()),
            ("http.listeners", ""),
        ]));
        if let Some((bound, advertised)) = self.replication {
            let port = self.port;
            all.extend(pairs(&[
                (
                    "listeners",
                    &format!("PLAINTEXT://127.0.0.1:{port},REPLICATION://127.0.0.1:{bound}"),
                ),
                (
                    "advertised.listeners",
                    &format!("PLAINTEXT://127.0.0.1:{port},REPLICATION://127.0.0.1:{advertised}"),
                ),
                (
                    "listener.security.protocol.map",
                    "PLAINTEXT:PLAINTEXT,REPLICATION:PLAINTEXT",
                ),
                ("inter.broker.listener.name", "REPLICATION"),
            ]));
        }
        if !self.voters.is_empty() {
            all.push(("controller.quorum.voters".into(), self.voters.clone()));
        }
        BrokerConfig::from_pairs(&all).expect("the test's broker config is valid")
    }

    /// Starts the node and waits until it serves. Panics if it cannot start.
    pub fn start(&mut self) {
        init_logging();
        assert!(
            self.running.is_none(),
            "node {} is already running",
            self.id
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("node-{}", self.id))
            .enable_all()
            .build()
            .expect("a tokio runtime for the node");
        let (tx, rx) = std::sync::mpsc::channel();
        let (config, clock, id) = (self.broker_config(), self.clock.clone(), self.id);
        runtime.spawn(async move {
            match Server::start_with_clock(config, clock).await {
                Ok(server) => {
                    let _ = tx.send(Ok((server.local_addr().to_string(), server.broker())));
                    server.run(std::future::pending()).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("node {id} cannot start: {e}")));
                }
            }
        });
        let (addr, broker) = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("node {} did not start within {START_TIMEOUT:?}", self.id),
        };
        self.running = Some(Running {
            runtime,
            broker: Arc::downgrade(&broker),
            addr,
        });
    }

    /// Stops the node abruptly (see the module's doc) and waits until its broker is gone,
    /// so that it can be started again on the same dir.
    pub fn crash(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.runtime.shutdown_background();
        let deadline = Instant::now() + DROP_TIMEOUT;
        while running.broker.upgrade().is_some() {
            assert!(
                Instant::now() < deadline,
                "node {}'s broker was still alive {DROP_TIMEOUT:?} after its runtime was dropped",
                self.id
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The Kafka listener's address. Panics when the node is down.
    pub fn addr(&self) -> String {
        self.running
            .as_ref()
            .expect("the node is running")
            .addr
            .clone()
    }

    /// The running broker (for checks on its state). Panics when the node is down.
    pub fn broker(&self) -> Arc<Broker> {
        self.running
            .as_ref()
            .and_then(|r| r.broker.upgrade())
            .expect("the node is running")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.runtime.shutdown_background();
        }
    }
}

/// Logs the brokers' tracing to the test's output when `RUNNEL_TEST_LOG` is set (an
/// env-filter, e.g. `info` or `runnel_broker=debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("RUNNEL_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn pairs(config: &[(&str, &str)]) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `n` nodes of one cluster, every node a voter and a broker (KRaft's combined mode),
/// on ports checked free (below 32768) and data dirs under `root`. Not started.
pub fn cluster(
    n: usize,
    root: &std::path::Path,
    config: &[(&str, &str)],
    clock: Arc<dyn Clock>,
) -> Vec<Node> {
    let ports = free_ports(2 * n);
    let voters: Vec<String> = (0..n)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[n + i]))
        .collect();
    let voters = voters.join(",");
    (0..n)
        .map(|i| Node {
            id: i as i32 + 1,
            port: ports[i],
            controller_port: Some(ports[n + i]),
            dir: root.join(format!("node-{}", i + 1)),
            config: pairs(config),
            clock: clock.clone(),
            replication: None,
            voters: voters.clone(),
            running: None,
        })
        .collect()
}

/// `n` distinct ports in 20000..32000 that are free now (bound and released), starting
/// at a place that depends on the process id (parallel test runs rarely collide) and
/// moves on with every call (tests of one process never pick the same ports).
pub fn free_ports(n: usize) -> Vec<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let skip = TAKEN.fetch_add(n as u32 + 16, Ordering::Relaxed);
    let mut next = std::process::id().wrapping_mul(7919).wrapping_add(skip) % SPAN;
    let mut out = Vec::with_capacity(n);
    for _ in 0..SPAN {
        if out.len() == n {
            break;
        }
        let port = (LOW + next) as u16;
        next = (next + 1) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    assert_eq!(out.len(), n, "not enough free ports below 32768");
    out
}

/// Gives each node a REPLICATION listener reached through a `Proxy` (returned in node
/// order): freezing a node's proxy stops the follower fetches from it (and any other
/// inter-broker request to it) without closing a connection.
pub fn replication_proxies(nodes: &mut [Node]) -> Vec<Proxy> {
    let ports = free_ports(2 * nodes.len());
    nodes
        .iter_mut()
        .zip(ports.chunks(2))
        .map(|(n, p)| {
            n.replication = Some((p[0], p[1]));
            Proxy::start(p[1], p[0])
        })
        .collect()
}

/// A TCP proxy on 127.0.0.1 that can be frozen: while frozen it accepts and holds what
/// it reads, forwarding nothing (a stalled network path, not a refused one).
pub struct Proxy {
    frozen: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    pub fn start(listen: u16, target: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("proxy")
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", listen)))
            .expect("the proxy's port is free");
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        runtime.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let frozen = f.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::select! {
                        _ = pipe(ir, ow, frozen.clone()) => {}
                        _ = pipe(or, iw, frozen) => {}
                    }
                });
            }
        });
        Proxy {
            frozen,
            _runtime: runtime,
        }
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
