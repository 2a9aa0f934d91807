//! A cluster of in-process voters on 127.0.0.1 ports bound by the test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_meta::{ClusterImage, ControllerClient, MetaConfig, MetaNode, NewTopic};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

pub const LIMIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub dirs: Vec<TempDir>,
    pub voters: Vec<(i32, SocketAddr)>,
    pub nodes: Vec<Option<Arc<MetaNode>>>,
    tweak: fn(&mut MetaConfig),
}

pub fn no_tweak(_: &mut MetaConfig) {}

impl Cluster {
    pub async fn start(n: usize, tweak: fn(&mut MetaConfig)) -> Cluster {
        let mut listeners = Vec::new();
        let mut voters = Vec::new();
        for i in 0..n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            voters.push((i as i32 + 1, l.local_addr().unwrap()));
            listeners.push(l);
        }
        let mut c = Cluster {
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            voters,
            nodes: Vec::new(),
            tweak,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let node = MetaNode::start(c.cfg(i), Some(l)).await.unwrap();
            c.nodes.push(Some(node));
        }
        c
    }

    pub fn cfg(&self, i: usize) -> MetaConfig {
        let mut cfg = MetaConfig::new(self.voters[i].0, self.voters.clone(), self.dirs[i].path());
        (self.tweak)(&mut cfg);
        cfg
    }

    pub fn node(&self, i: usize) -> &Arc<MetaNode> {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn index_of(&self, id: i32) -> usize {
        self.voters.iter().position(|(v, _)| *v == id).unwrap()
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    pub async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }

    /// Restarts node `i` on its own address and directory.
    pub async fn restart(&mut self, i: usize) {
        let addr = self.voters[i].1;
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding {addr}: {e}"),
            }
        };
        self.nodes[i] = Some(MetaNode::start(self.cfg(i), Some(listener)).await.unwrap());
    }

    fn running(&self) -> impl Iterator<Item = &Arc<MetaNode>> {
        self.nodes.iter().flatten()
    }

    /// Waits until every running node names the same leader, which is running.
    pub async fn wait_leader(&self) -> i32 {
        loop {
            let leaders: Vec<Option<i32>> = self.running().map(|n| n.leader()).collect();
            if let Some(Some(l)) = leaders.first() {
                let running = self
                    .running()
                    .any(|n| n.node_id() == *l && n.is_controller());
                if running && leaders.iter().all(|x| *x == Some(*l)) {
                    return *l;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `pred` holds on the image of every running node.
    pub async fn wait_all(&self, pred: impl Fn(&ClusterImage) -> bool) -> Vec<Arc<ClusterImage>> {
        let mut out = Vec::new();
        for n in self.running() {
            out.push(wait_image(n.image(), &pred).await);
        }
        out
    }

    pub fn client(&self) -> ControllerClient {
        ControllerClient::new(self.voters.clone()).with_timeout(Duration::from_secs(20))
    }
}

pub async fn wait_image(
    mut rx: watch::Receiver<Arc<ClusterImage>>,
    pred: impl Fn(&ClusterImage) -> bool,
) -> Arc<ClusterImage> {
    rx.wait_for(|i| pred(i))
        .await
        .expect("image channel open")
        .clone()
}

/// Registers broker `id` and keeps it heartbeating until the returned sender says stop.
/// Its registered port listens (the controller probes a broker's port and fences one
/// that refuses: a process that is gone) until then.
pub async fn live_broker(
    client: Arc<ControllerClient>,
    id: i32,
    rack: Option<&str>,
) -> (i64, watch::Sender<bool>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let epoch = client
        .register_broker(
            id,
            "127.0.0.1",
            i32::from(port.local_addr().unwrap().port()),
            Vec::new(),
            rack.map(str::to_string),
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    let first = client.heartbeat(id, epoch, false).await.unwrap();
    assert!(!first.fenced);
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.changed() => {
                    drop(port);
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(150)) => {
                    let _ = client.heartbeat(id, epoch, false).await;
                }
            }
        }
    });
    (epoch, stop)
}

/// Starts `n` voters, runs `body` within [`LIMIT`], stops what is still running.
pub async fn run<F, Fut>(n: usize, tweak: fn(&mut MetaConfig), body: F)
where
    F: FnOnce(Cluster) -> Fut,
    Fut: std::future::Future<Output = Cluster>,
{
    // Logs only when asked (RUST_LOG=runnel_meta=info), into the test's captured output.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    tokio::time::timeout(LIMIT, async {
        let c = Cluster::start(n, tweak).await;
        let mut c = body(c).await;
        c.stop_all().await;
    })
    .await
    .expect("test timed out");
}

/// Registers and heartbeats each of `ids` (no rack).
pub async fn live_brokers(
    client: &Arc<ControllerClient>,
    ids: &[i32],
) -> Vec<(i64, watch::Sender<bool>)> {
    let mut out = Vec::new();
    for id in ids {
        out.push(live_broker(client.clone(), *id, None).await);
    }
    out
}

pub fn topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: rf,
        ..Default::default()
    }
}

/// Creates a topic, which must succeed; returns its id.
pub async fn create(client: &ControllerClient, name: &str, partitions: i32, rf: i16) -> Uuid {
    client
        .create_topics(vec![topic(name, partitions, rf)], false)
        .await[0]
        .clone()
        .unwrap_or_else(|e| panic!("creating {name}: {e}"))
}
