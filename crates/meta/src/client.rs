//! [`ControllerClient`]: what a broker uses to reach the active controller from any process
//! that knows the voters.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{format_voters, voter_addr};
use crate::error::{ControllerError, ErrorKind};
use crate::image::{ClusterImage, PartitionImage};
use crate::rpc::{
    AlterPartitionRequest, Conn, ControllerReply, ControllerRequest, Elections, FrameError,
    HeartbeatReply, NewTopic, Request, Response,
};
use crate::transport::QuorumTransport;

/// Idle connections kept per voter.
const MAX_IDLE: usize = 4;
/// One attempt never waits longer than this for its answer (a hung voter is given up on
/// well within a broker session).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(3);
/// How long a watch long poll waits on the voter before it answers "nothing new".
const WATCH_WAIT: Duration = Duration::from_secs(2);

/// Broker → active controller RPCs. Finds the leader, follows "not controller, node X is"
/// replies, retries with backoff until the request deadline.
pub struct ControllerClient {
    voters: Vec<(i32, SocketAddr)>,
    leader: Mutex<Option<i32>>,
    idle: Mutex<HashMap<i32, Vec<Conn>>>,
    timeout: Duration,
    image: OnceLock<watch::Receiver<Arc<ClusterImage>>>,
    transport: QuorumTransport,
}

impl ControllerClient {
    /// A client for these voters; the first voter is tried first. Requests give up after
    /// 15 s (see [`ControllerClient::with_timeout`]).
    pub fn new(voters: Vec<(i32, SocketAddr)>) -> Self {
        ControllerClient {
            voters,
            leader: Mutex::new(None),
            idle: Mutex::new(HashMap::new()),
            timeout: Duration::from_secs(15),
            image: OnceLock::new(),
            transport: QuorumTransport::default(),
        }
    }

    /// Reach the voters through `transport` (the controller listener's TLS / SASL) rather
    /// than plain TCP.
    pub fn with_transport(mut self, transport: QuorumTransport) -> Self {
        self.transport = transport;
        self
    }

    /// How long a request keeps trying (finding the controller, retrying) before it fails
    /// with [`ErrorKind::Timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The controller the last answer came from (or pointed to).
    pub fn known_controller(&self) -> Option<i32> {
        *self.leader.lock()
    }

    async fn send(&self, target: i32, req: &Request, limit: Duration) -> Result<Response, String> {
        let addr = voter_addr(&self.voters, target)
            .ok_or_else(|| format!("node {target} is not a known voter"))?;
        let pooled = self.idle.lock().get_mut(&target).and_then(|v| v.pop());
        let was_pooled = pooled.is_some();
        let mut conn = pooled.unwrap_or_else(|| Conn::new(addr, self.transport.clone()));
        let mut res = conn.call(req, limit).await;
        if was_pooled && matches!(&res, Err((_, e)) if !matches!(e, FrameError::Timeout(_))) {
            // An idle connection the voter closed meanwhile (it restarted): one fresh try.
            res = conn.call(req, limit).await;
        }
        if res.is_ok() {
            let mut idle = self.idle.lock();
            let v = idle.entry(target).or_default();
            if v.len() < MAX_IDLE {
                v.push(conn);
            }
        }
        res.map_err(|(_, e)| format!("controller {target} at {addr}: {e}"))
    }

    /// Sends a controller request to the active controller, finding it first.
    async fn call(&self, req: ControllerRequest) -> Result<ControllerReply, ControllerError> {
        if self.voters.is_empty() {
            return Err(ControllerError::new(
                ErrorKind::Unavailable,
                "no controller voters are configured",
            ));
        }
        let req = Request::Controller(req);
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(25);
        let mut next = 0usize;
        let mut last_err = String::from("none answered");
        let mut hops = 0;
        // The voter that last failed to answer (hung: SIGSTOP, or unreachable), and when.
        // A follower that has not noticed yet still names it as the leader; following that
        // hint, or coming round to it again, would spend another attempt (3 s) on it,
        // longer than a short broker session. It is avoided for one attempt's time.
        let mut failed: Option<(i32, Instant)> = None;
        loop {
            let avoid = failed
                .filter(|(_, at)| at.elapsed() < ATTEMPT_LIMIT)
                .map(|(id, _)| id);
            let target = match *self.leader.lock() {
                Some(l) => l,
                None => {
                    if self.voters.len() > 1
                        && Some(self.voters[next % self.voters.len()].0) == avoid
                    {
                        next += 1;
                    }
                    self.voters[next % self.voters.len()].0
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ControllerError::new(
                    ErrorKind::Timeout,
                    format!(
                        "no active controller answered within {:?} (voters {}); last: {last_err}",
                        self.timeout,
                        format_voters(&self.voters)
                    ),
                ));
            }
            let mut redirected = false;
            match self.send(target, &req, remaining.min(ATTEMPT_LIMIT)).await {
                Ok(Response::Controller(Ok(reply))) => {
                    *self.leader.lock() = Some(target);
                    return Ok(reply);
                }
                Ok(Response::Controller(Err(e))) if e.kind == ErrorKind::NotController => {
                    last_err = e.message.clone();
                    let hint = e.leader.filter(|l| {
                        *l != target && Some(*l) != avoid && voter_addr(&self.voters, *l).is_some()
                    });
                    match hint {
                        Some(l) => {
                            *self.leader.lock() = Some(l);
                            redirected = true;
                        }
                        None => {
                            *self.leader.lock() = None;
                            next += 1;
                        }
                    }
                }
                Ok(Response::Controller(Err(e))) if e.is_retriable() => {
                    last_err = e.message.clone();
                    *self.leader.lock() = None;
                    next += 1;
                }
                Ok(Response::Controller(Err(e))) => return Err(e),
                Ok(_) => {
                    last_err =
                        format!("controller {target} answered with another kind of response");
                    *self.leader.lock() = None;
                    next += 1;
                }
                Err(e) => {
                    last_err = e;
                    *self.leader.lock() = None;
                    failed = Some((target, Instant::now()));
                    next += 1;
                }
            }
            hops += 1;
            if redirected && hops < 4 {
                continue;
            }
            hops = 0;
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    fn unexpected(reply: ControllerReply) -> ControllerError {
        ControllerError::new(
            ErrorKind::Unavailable,
            format!("the controller answered with an unexpected reply: {reply:?}"),
        )
    }

    /// Registers a broker (fenced until its first heartbeat); returns its broker epoch.
    pub async fn register_broker(
        &self,
        id: i32,
        host: &str,
        port: i32,
        endpoints: Vec<crate::image::BrokerEndpoint>,
        rack: Option<String>,
        incarnation: Uuid,
    ) -> Result<i64, ControllerError> {
        match self
            .call(ControllerRequest::RegisterBroker {
                id,
                host: host.to_string(),
                port,
                endpoints,
                rack,
                incarnation,
            })
            .await?
        {
            ControllerReply::BrokerEpoch(e) => Ok(e),
            other => Err(Self::unexpected(other)),
        }
    }

    /// UnregisterBroker: the broker left the cluster for good (decommissioning). Its
    /// partitions move as when it is fenced; it stays in replica lists until reassigned.
    pub async fn unregister_broker(&self, id: i32) -> Result<(), ControllerError> {
        self.done(ControllerRequest::UnregisterBroker { id }).await
    }

    /// A broker heartbeat; `want_shutdown` asks for a controlled shutdown.
    pub async fn heartbeat(
        &self,
        id: i32,
        broker_epoch: i64,
        want_shutdown: bool,
    ) -> Result<HeartbeatReply, ControllerError> {
        match self
            .call(ControllerRequest::Heartbeat {
                id,
                broker_epoch,
                want_shutdown,
            })
            .await?
        {
            ControllerReply::Heartbeat(h) => Ok(h),
            other => Err(Self::unexpected(other)),
        }
    }

    /// CreateTopics: one result per topic (the new topic id).
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<Uuid, ControllerError>> {
        let n = topics.len();
        match self
            .call(ControllerRequest::CreateTopics {
                topics,
                validate_only,
            })
            .await
        {
            Ok(ControllerReply::Topics(r)) if r.len() == n => r,
            Ok(other) => vec![Err(Self::unexpected(other)); n],
            Err(e) => vec![Err(e); n],
        }
    }

    /// DeleteTopics: one result per name.
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<Result<(), ControllerError>> {
        let n = names.len();
        match self.call(ControllerRequest::DeleteTopics { names }).await {
            Ok(ControllerReply::Deleted(r)) if r.len() == n => r,
            Ok(other) => vec![Err(Self::unexpected(other)); n],
            Err(e) => vec![Err(e); n],
        }
    }

    /// CreatePartitions: grows `topic` to `total` partitions.
    pub async fn create_partitions(
        &self,
        topic: &str,
        total: i32,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> Result<(), ControllerError> {
        self.done(ControllerRequest::CreatePartitions {
            topic: topic.to_string(),
            total,
            assignments,
        })
        .await
    }

    /// Tells the controller that a replica fetch connection to or from broker `id` (at
    /// `broker_epoch`) ended by EOF or reset: it probes that broker's port and fences it
    /// at once if its process is gone. Only a hint; the session timeout still decides
    /// for a broker that is silent but listening.
    pub async fn peer_closed(&self, id: i32, broker_epoch: i64) -> Result<(), ControllerError> {
        self.done(ControllerRequest::PeerClosed { id, broker_epoch })
            .await
    }

    async fn done(&self, req: ControllerRequest) -> Result<(), ControllerError> {
        match self.call(req).await? {
            ControllerReply::Done => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// AlterPartition (ISR change) from the partition leader; returns the new state.
    #[allow(clippy::too_many_arguments)]
    pub async fn alter_partition(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    ) -> Result<PartitionImage, ControllerError> {
        let req = AlterPartitionRequest::new(
            broker_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
        );
        match self.call(ControllerRequest::AlterPartition(req)).await? {
            ControllerReply::Partition(p) => Ok(p),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Replaces a topic's config overrides.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ControllerError> {
        self.done(ControllerRequest::AlterTopicConfigs {
            topic: topic.to_string(),
            configs,
        })
        .await
    }

    /// Cluster-wide dynamic broker configs (Kafka's `--entity-default` broker configs);
    /// `None` deletes a key. The image's `broker_configs` holds the result.
    pub async fn alter_broker_configs(
        &self,
        configs: BTreeMap<String, Option<String>>,
    ) -> Result<(), ControllerError> {
        self.done(ControllerRequest::AlterBrokerConfigs { configs })
            .await
    }

    /// The metadata quorum's state, from its leader (Kafka's DescribeQuorum).
    pub async fn describe_quorum(&self) -> Result<crate::rpc::QuorumState, ControllerError> {
        match self.call(ControllerRequest::DescribeQuorum).await? {
            ControllerReply::Quorum(q) => Ok(q),
            other => Err(Self::unexpected(other)),
        }
    }

    /// ElectLeaders: `None` = every partition (then partitions needing no election are left
    /// out of the results); `preferred` = preferred-leader election, else unclean election.
    pub async fn elect_leaders(
        &self,
        partitions: Option<Vec<(String, i32)>>,
        preferred: bool,
    ) -> Elections {
        let asked = partitions.clone();
        match self
            .call(ControllerRequest::ElectLeaders {
                partitions,
                preferred,
            })
            .await
        {
            Ok(ControllerReply::Elected(r)) => r,
            Ok(other) => {
                let e = Self::unexpected(other);
                asked
                    .unwrap_or_default()
                    .into_iter()
                    .map(|k| (k, Err(e.clone())))
                    .collect()
            }
            Err(e) => asked
                .unwrap_or_default()
                .into_iter()
                .map(|k| (k, Err(e.clone())))
                .collect(),
        }
    }

    /// AlterPartitionReassignments for one partition: `Some(replicas)` starts one, `None`
    /// cancels the one in progress.
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        replicas: Option<Vec<i32>>,
    ) -> Result<(), ControllerError> {
        self.done(ControllerRequest::Reassign {
            topic: topic.to_string(),
            partition,
            replicas,
        })
        .await
    }

    /// The cluster image as seen by the voters, for a process that is not one: a background
    /// task long-polls a voter (any; it sticks to one that answers) and ends when every
    /// receiver is dropped. Must be called inside a tokio runtime.
    pub fn watch_image(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.image
            .get_or_init(|| {
                let (tx, rx) = watch::channel(Arc::new(ClusterImage::default()));
                match tokio::runtime::Handle::try_current() {
                    Ok(h) => {
                        h.spawn(watch_loop(self.voters.clone(), self.transport.clone(), tx));
                    }
                    Err(_) => tracing::error!(
                        "ControllerClient::watch_image called outside a tokio runtime"
                    ),
                }
                rx
            })
            .clone()
    }
}

async fn watch_loop(
    voters: Vec<(i32, SocketAddr)>,
    transport: QuorumTransport,
    tx: watch::Sender<Arc<ClusterImage>>,
) {
    if voters.is_empty() {
        return;
    }
    let mut conns: Vec<Conn> = voters
        .iter()
        .map(|(_, a)| Conn::new(*a, transport.clone()))
        .collect();
    let mut i = 0usize;
    let mut known = 0u64;
    loop {
        if tx.is_closed() {
            return;
        }
        let req = Request::WatchImage {
            known_index: known,
            wait_ms: WATCH_WAIT.as_millis() as u64,
        };
        let conn = &mut conns[i % voters.len()];
        match conn.call(&req, WATCH_WAIT + Duration::from_secs(3)).await {
            Ok(Response::Image(Some(img))) => {
                if img.applied_index > known {
                    known = img.applied_index;
                    tx.send_replace(Arc::new(img));
                }
            }
            Ok(Response::Image(None)) => {}
            Ok(_) | Err(_) => {
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetaConfig;
    use crate::node::MetaNode;
    use crate::rpc::{read_frame, write_frame, Response};
    use tokio::net::TcpListener;

    /// A voter whose process hangs (SIGSTOP): its kernel accepts, nothing answers.
    async fn hung_voter() -> (SocketAddr, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (l.local_addr().unwrap(), l)
    }

    /// A follower that has not noticed yet: it names `leader` as the controller.
    async fn stale_follower(leader: i32) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    while let Ok(_req) = read_frame::<Request, _>(&mut s).await {
                        let no = ControllerError::not_controller(2, Some(leader));
                        let resp = Response::Controller(Err(no));
                        if write_frame(&mut s, &resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_voter_named_by_a_stale_follower_is_not_tried_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real_addr = real.local_addr().unwrap();
        let node = MetaNode::start(
            MetaConfig::new(3, vec![(3, real_addr)], dir.path()),
            Some(real),
        )
        .await
        .unwrap();
        let (hung_addr, _hung) = hung_voter().await;
        let follower = stale_follower(1).await;
        let client = ControllerClient::new(vec![(1, hung_addr), (2, follower), (3, real_addr)]);
        let t0 = Instant::now();
        let epoch = client
            .register_broker(7, "127.0.0.1", 9007, Vec::new(), None, Uuid::new_v4())
            .await
            .unwrap();
        assert!(epoch > 0);
        // One attempt (3 s) is lost on the hung voter; following the stale follower's
        // hint back to it would lose another.
        let took = t0.elapsed();
        assert!(took < ATTEMPT_LIMIT * 2, "registered after {took:?}");
        node.shutdown().await;
    }
}
