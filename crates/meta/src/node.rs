//! [`MetaNode`]: one controller voter. Runs the Raft node, the RPC service on the voter's
//! controller address, and the controller (active only while this node is the Raft leader).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::MetaConfig;
use crate::controller;
use crate::error::{ControllerError, ErrorKind, MetaError};
use crate::image::{ClusterImage, MetadataRecord};
use crate::network::Network;
use crate::rpc::{
    read_frame, write_frame, ControllerReply, ControllerRequest, FrameError, Request, Response,
};
use crate::store::{LogStore, RecordBatch, StateMachine, TypeConfig};
use crate::transport::{BoxedStream, QuorumTransport};

/// The longest a connection's TLS / SASL handshake may take on the server.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// The longest a watch long poll may wait before answering "nothing new".
const MAX_WATCH_WAIT: Duration = Duration::from_secs(30);
/// The longest the controller waits for Raft (a read barrier or a write) before it answers
/// Unavailable and checks its leadership again.
const RAFT_WAIT: Duration = Duration::from_secs(5);
/// The largest log entry the controller writes (a quarter of the frame limit, so that
/// AppendEntries can always carry it).
const MAX_ENTRY: usize = crate::store::MAX_FRAME / 4;
/// The longest a controller request may take on the server (a stuck quorum answers
/// Unavailable after this).
const CONTROLLER_REQUEST_LIMIT: Duration = Duration::from_secs(20);

type Reply = Result<ControllerReply, ControllerError>;
/// A controller request, where to answer it, and when it arrived (a heartbeat counts from
/// its arrival, not from when the controller got to it).
type Job = (ControllerRequest, oneshot::Sender<Reply>, Instant);

/// How long the controller waits for a broker's port to answer a liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The pauses before each liveness probe of a process whose connection closed (at 0, 20,
/// 70 and 170 ms): it is judged gone at the first refusal, and alive only if its port
/// accepts at every probe. A dying process closes its connections in descriptor order,
/// so the first probe can still find its listening socket open for a moment; stopping at
/// that accept left a killed broker to the 9 s session timeout (issue 19). A client
/// (librdkafka) re-queries a down leader's partitions once a second, so fencing sooner than
/// that decides whether failover takes one such round or two.
const PROBE_PAUSES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(20),
    Duration::from_millis(50),
    Duration::from_millis(100),
];

/// After the Raft leader's process is found dead, the followers ask for votes in id order,
/// this far apart, so that two of them do not split the vote.
const ELECTION_STAGGER: Duration = Duration::from_millis(40);

/// A broker's heartbeat connection to this voter ended at `at`: the controller probes the
/// broker's port to tell a dead process from a dropped connection.
#[derive(Debug, Clone, Copy)]
struct Lost {
    id: i32,
    broker_epoch: i64,
    at: Instant,
}

/// A controller voter (in combined mode every node is broker and voter).
pub struct MetaNode {
    node_id: i32,
    raft: Raft<TypeConfig>,
    image_tx: watch::Sender<Arc<ClusterImage>>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl MetaNode {
    /// Starts the voter: opens (or creates) its directory, binds its controller address
    /// (or takes `listener`, already bound: tests bind port 0 first), joins the quorum.
    pub async fn start(
        cfg: MetaConfig,
        listener: Option<TcpListener>,
    ) -> Result<Arc<MetaNode>, MetaError> {
        cfg.validate().map_err(MetaError::Config)?;
        let own = cfg
            .own_addr()
            .ok_or_else(|| MetaError::Config("no own address".into()))?;
        let log = LogStore::open(&cfg.dir)?;
        let sm = StateMachine::open(&cfg.dir)?;
        let image_tx = sm.sender();
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        let raft_cfg = openraft::Config {
            cluster_name: "runnel-metadata".into(),
            election_timeout_min: ms(cfg.election_timeout_min),
            election_timeout_max: ms(cfg.election_timeout_max),
            heartbeat_interval: ms(cfg.heartbeat_interval),
            install_snapshot_timeout: ms(cfg.election_timeout_max).max(1000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetaError::Config(format!("raft settings: {e}")))?;
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(own).await.map_err(|e| {
                MetaError::Config(format!("cannot bind the controller address {own}: {e}"))
            })?,
        };
        let local_addr = listener
            .local_addr()
            .map_err(|e| MetaError::Config(format!("controller listener: {e}")))?;
        let voters: BTreeMap<u64, SocketAddr> =
            cfg.voters.iter().map(|(id, a)| (*id as u64, *a)).collect();
        let network = Network {
            me: cfg.node_id as u64,
            voters: voters.clone(),
            transport: cfg.transport.clone(),
        };
        let raft = Raft::new(cfg.node_id as u64, Arc::new(raft_cfg), network, log, sm)
            .await
            .map_err(|e| MetaError::Raft(format!("starting node {}: {e}", cfg.node_id)))?;
        let (stop, _) = watch::channel(false);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(1024);
        let (lost_tx, lost_rx) = mpsc::unbounded_channel::<Lost>();
        // Probes report a broker whose port refuses connections here.
        let (gone_tx, gone_rx) = mpsc::unbounded_channel::<Lost>();
        let node = Arc::new(MetaNode {
            node_id: cfg.node_id,
            raft: raft.clone(),
            image_tx: image_tx.clone(),
            local_addr,
            stop: stop.clone(),
            tasks: Mutex::new(Vec::new()),
        });
        let watch_leader = LeaderWatch {
            me: cfg.node_id as u64,
            voters: Arc::new(voters.clone()),
            watching: Default::default(),
        };
        let server = tokio::spawn(serve(
            listener,
            cfg.transport.clone(),
            watch_leader,
            raft.clone(),
            image_tx.clone(),
            jobs_tx,
            lost_tx,
            stop.subscribe(),
        ));
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| MetaError::Raft(format!("node {}: {e}", cfg.node_id)))?;
        if !initialized {
            let members: BTreeMap<u64, BasicNode> = voters
                .iter()
                .map(|(id, a)| {
                    (
                        *id,
                        BasicNode {
                            addr: a.to_string(),
                        },
                    )
                })
                .collect();
            // Every voter proposes the same initial membership (entry 0, identical on all),
            // so it does not matter which starts first.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(node = cfg.node_id, "raft initialize: {e}");
            }
        } else if voters.len() == 1 {
            // A lone voter need not wait out an election timeout to lead again.
            if let Err(e) = raft.trigger().elect().await {
                tracing::debug!(node = cfg.node_id, "raft elect: {e}");
            }
        }
        let actor = Actor {
            me: cfg.node_id,
            raft: raft.clone(),
            image: image_tx.subscribe(),
            cfg: cfg.clone(),
            heartbeats: HashMap::new(),
            synced_term: None,
            session_start: Instant::now(),
            last_rebalance: Instant::now(),
            gone: gone_tx,
        };
        let controller = tokio::spawn(actor.run(jobs_rx, lost_rx, gone_rx, stop.subscribe()));
        node.tasks.lock().extend([server, controller]);
        tracing::info!(node = cfg.node_id, addr = %local_addr, protocol = cfg.transport.protocol(), "metadata voter started");
        Ok(node)
    }

    /// The cluster image, updated after each applied log entry.
    pub fn image(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.image_tx.subscribe()
    }

    /// The current Raft leader (= the active controller), if known.
    pub fn leader(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|l| l as i32)
    }

    /// This node is the active controller.
    pub fn is_controller(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id as u64)
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The address the RPC service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Raft's own metrics (term, log and snapshot indexes), for tests and diagnostics.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<u64, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Asks Raft to take a snapshot now (and purge the log before it).
    pub async fn trigger_snapshot(&self) -> Result<(), MetaError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| MetaError::Raft(format!("node {}: snapshot: {e}", self.node_id)))
    }

    /// Stops the RPC service, the controller and Raft (the port is free afterwards).
    /// The listening port closes before Raft's own connections to the other voters do,
    /// as when the process dies: a follower that sees this leader's connection close
    /// then finds the port refusing and elects a new leader at once.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.node_id, "raft shutdown: {e}");
        }
    }
}

impl Drop for MetaNode {
    /// Without [`MetaNode::shutdown`]: stops the RPC service and the controller at least.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    transport: QuorumTransport,
    watch_leader: LeaderWatch,
    raft: Raft<TypeConfig>,
    image: watch::Sender<Arc<ClusterImage>>,
    jobs: mpsc::Sender<Job>,
    lost: mpsc::UnboundedSender<Lost>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let handshake = transport.accept(stream, peer);
                    let protocol = transport.protocol().to_string();
                    let (raft, image, jobs, lost) = (raft.clone(), image.clone(), jobs.clone(), lost.clone());
                    let watch_leader = watch_leader.clone();
                    let mut stop = stop.clone();
                    tokio::spawn(async move {
                        let conn = async move {
                            // TLS / SASL first (bounded: a silent peer holds nothing for
                            // long); a failed handshake serves nothing.
                            let stream = match tokio::time::timeout(HANDSHAKE_LIMIT, handshake).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::warn!(%peer, protocol, "metadata rpc: refused a connection whose handshake failed: {e}");
                                    return Ok(());
                                }
                                Err(_) => {
                                    tracing::warn!(%peer, protocol, "metadata rpc: refused a connection with no handshake within {HANDSHAKE_LIMIT:?}");
                                    return Ok(());
                                }
                            };
                            connection(stream, raft, image, jobs, lost, watch_leader).await
                        };
                        tokio::select! {
                            _ = stopped(&mut stop) => {}
                            r = conn => if let Err(e) = r {
                                tracing::debug!(%peer, "metadata rpc connection closed: {e}");
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("metadata rpc accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves one connection: requests in order, one response each. A frame that is too large
/// or does not parse ends the connection. When a connection that carried a broker's
/// heartbeats ends, the controller hears of it (`lost`); when one that carried the Raft
/// leader's appends ends, this follower checks whether the leader's process is gone.
async fn connection(
    stream: BoxedStream,
    raft: Raft<TypeConfig>,
    image: watch::Sender<Arc<ClusterImage>>,
    jobs: mpsc::Sender<Job>,
    lost: mpsc::UnboundedSender<Lost>,
    watch_leader: LeaderWatch,
) -> Result<(), FrameError> {
    let mut seen = Seen::default();
    let served = serve_requests(stream, raft.clone(), image, jobs, &mut seen).await;
    if let Some((id, broker_epoch)) = seen.heartbeats_of {
        let _ = lost.send(Lost {
            id,
            broker_epoch,
            at: Instant::now(),
        });
    }
    if let Some(leader) = seen.leader {
        tokio::spawn(watch_leader.elect_if_dead(raft, leader));
    }
    served
}

/// What one connection carried: a broker's heartbeats, or the Raft leader's appends.
#[derive(Default)]
struct Seen {
    heartbeats_of: Option<(i32, i64)>,
    leader: Option<LeaderSeen>,
}

/// The Raft leader whose appends a connection carried: its id and term.
#[derive(Clone, Copy)]
struct LeaderSeen {
    id: u64,
    term: u64,
}

/// Replaces a Raft leader whose process is gone at once, instead of after the followers'
/// lease on it and an election timeout. Raft waits out its timers because a silent leader
/// may be alive; a closed connection and a port that refuses a probe say it is not.
///
/// openraft grants no vote while the voter's lease on the last leader runs
/// (`election_timeout_max` since its last append), unless the voter's own vote is not
/// committed. So every follower that found the leader dead first stands for election
/// itself: it cannot win that term (each survivor votes for itself, or still holds its
/// lease), but its vote is no longer a committed one. Then the survivors stand again in id
/// order, [`ELECTION_STAGGER`] apart (doubling each round), each only while no new leader
/// is known: the first whose term is above the others' (and whose log is as long as
/// theirs) wins. One that granted its vote to another waits a round for that one to win.
#[derive(Clone)]
struct LeaderWatch {
    me: u64,
    voters: Arc<BTreeMap<u64, SocketAddr>>,
    /// The leaders a watch runs for on this node, each with the newest term one of its
    /// closed connections carried since the watch began probing, if any. A leader holds
    /// more than one connection to each follower, and may have carried two terms: a watch
    /// per closed connection made a survivor stand twice per round, a term apart, so that
    /// the votes granted for the first term came back too late. (One watch per node
    /// missed the death of a leader while it probed an earlier one that was alive.)
    watching: Arc<Mutex<HashMap<u64, Option<u64>>>>,
}

/// How many times each surviving voter stands again after giving up its lease (a vote
/// split by a voter that was late to notice costs one more round). Each round doubles the
/// stagger (40, 80, ... 640 ms apart): on a loaded machine a vote request can take longer
/// than one stagger to reach the next voter.
const FAST_ELECTION_ROUNDS: u32 = 5;

/// Where this voter stands in the election that replaces a dead leader, as its Raft core
/// says (in turn with the vote requests already queued for it: the metrics lag them).
#[derive(Debug, PartialEq)]
enum Standing {
    /// A leader is known (this node, or one whose appends committed this node's vote).
    Settled,
    /// A candidate voting for itself: its last election has not succeeded.
    Own,
    /// It granted another candidate its vote in `term`, and no leader is known yet.
    Granted { term: u64 },
}

impl LeaderWatch {
    async fn elect_if_dead(self, raft: Raft<TypeConfig>, leader: LeaderSeen) {
        if leader.id == self.me {
            return;
        }
        {
            let mut watching = self.watching.lock();
            if let Some(again) = watching.get_mut(&leader.id) {
                *again = Some(again.map_or(leader.term, |t| t.max(leader.term)));
                return;
            }
            watching.insert(leader.id, None);
        }
        let mut leader = leader;
        loop {
            self.watch(&raft, leader).await;
            // A connection of this leader that closed while the watch ran: probe again
            // (its process may have died since an earlier probe found it alive).
            let mut watching = self.watching.lock();
            match watching.get_mut(&leader.id).and_then(Option::take) {
                Some(term) => leader.term = leader.term.max(term),
                None => {
                    watching.remove(&leader.id);
                    return;
                }
            }
        }
    }

    async fn watch(&self, raft: &Raft<TypeConfig>, leader: LeaderSeen) {
        let Some(addr) = self.voters.get(&leader.id) else {
            return;
        };
        if !refuses_a_probe(&addr.to_string()).await {
            return;
        }
        if !leaderless(raft, leader) {
            return;
        }
        tracing::warn!(leader = leader.id, term = leader.term, "the metadata quorum's leader closed its connection and its port refuses connections: asking for votes now");
        // Gives up this voter's lease on the dead leader (see the type's comment).
        let _ = raft.trigger().elect().await;
        let rank = self
            .voters
            .keys()
            .filter(|v| **v != leader.id && **v < self.me)
            .count() as u32;
        let voters = self.voters.len() as u32;
        let mut round_start = Instant::now();
        let mut granted_before = None;
        for r in 0..FAST_ELECTION_ROUNDS {
            let stagger = ELECTION_STAGGER * (1 << r);
            tokio::time::sleep_until(round_start + stagger * (rank + 1)).await;
            round_start += stagger * voters;
            match self.standing(raft).await {
                Standing::Settled => return,
                Standing::Own => {}
                // A voter that granted another candidate its vote must not stand again
                // at once: that candidate may have won, and this voter's newer term would
                // depose it before its first append arrives. But if a whole round later
                // still no leader is known, that candidate cannot win (its log is behind
                // this voter's, say): standing is up to this voter then, or the quorum
                // waits for Raft's timers (an 8.5 s failover, 1 in 5 runs under load).
                Standing::Granted { term } => {
                    if granted_before != Some(term) {
                        granted_before = Some(term);
                        continue;
                    }
                }
            }
            let _ = raft.trigger().elect().await;
        }
    }

    async fn standing(&self, raft: &Raft<TypeConfig>) -> Standing {
        let me = self.me;
        raft.with_raft_state(move |st| {
            let vote = st.vote_ref();
            if st.server_state == ServerState::Leader || vote.is_committed() {
                Standing::Settled
            } else if vote.leader_id().voted_for() == Some(me) {
                Standing::Own
            } else {
                Standing::Granted {
                    term: vote.leader_id().term,
                }
            }
        })
        .await
        .unwrap_or(Standing::Settled)
    }
}

/// No leader other than the dead `leader` is known yet, and this node is not it.
fn leaderless(raft: &Raft<TypeConfig>, leader: LeaderSeen) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.state != ServerState::Leader && m.current_leader.map_or(true, |l| l == leader.id)
}

/// Probes `addr` at each of [`PROBE_PAUSES`]: true once a connect is refused (no process
/// listens there: kill -9, a crash). A live process's listening socket never refuses. An
/// accepted connect is not proof of life until every probe was accepted: a dying process
/// can close its connections a moment before its listening socket. Unreachable (a
/// network partition) or another error is not proof of death, and ends the probing.
async fn refuses_a_probe(addr: &str) -> bool {
    refuses_probes(addr, &PROBE_PAUSES).await
}

/// Probes `addr` after each of `pauses`: true at the first refused connect.
async fn refuses_probes(addr: &str, pauses: &[Duration]) -> bool {
    for &pause in pauses {
        tokio::time::sleep(pause).await;
        match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            Ok(Ok(_)) => continue,
            _ => return false,
        }
    }
    false
}

async fn serve_requests(
    mut stream: BoxedStream,
    raft: Raft<TypeConfig>,
    image: watch::Sender<Arc<ClusterImage>>,
    jobs: mpsc::Sender<Job>,
    seen: &mut Seen,
) -> Result<(), FrameError> {
    loop {
        let req: Request = match read_frame(&mut stream).await {
            Ok(r) => r,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let resp = match req {
            Request::AppendEntries(r) => {
                let (leader, term) = (r.vote.leader_id().voted_for(), r.vote.leader_id().term);
                let committed = r.vote.is_committed();
                let resp = raft.append_entries(r).await;
                if let (Some(id), true, true) = (leader, committed, resp.is_ok()) {
                    seen.leader = Some(LeaderSeen { id, term });
                }
                Response::AppendEntries(resp)
            }
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(raft.install_snapshot(r).await)
            }
            Request::Controller(r) => {
                if let ControllerRequest::Heartbeat {
                    id,
                    broker_epoch,
                    want_shutdown: false,
                } = r
                {
                    seen.heartbeats_of = Some((id, broker_epoch));
                }
                Response::Controller(controller_call(&jobs, r).await)
            }
            Request::WatchImage {
                known_index,
                wait_ms,
            } => {
                let wait = Duration::from_millis(wait_ms).min(MAX_WATCH_WAIT);
                let mut rx = image.subscribe();
                let newer =
                    tokio::time::timeout(wait, rx.wait_for(|i| i.applied_index > known_index))
                        .await;
                Response::Image(match newer {
                    Ok(Ok(img)) => Some((**img).clone()),
                    _ => None,
                })
            }
        };
        write_frame(&mut stream, &resp).await?;
    }
}

async fn controller_call(jobs: &mpsc::Sender<Job>, req: ControllerRequest) -> Reply {
    let (tx, rx) = oneshot::channel();
    let unavailable = |m: &str| ControllerError::new(ErrorKind::Unavailable, m.to_string());
    jobs.send((req, tx, Instant::now()))
        .await
        .map_err(|_| unavailable("the controller is shutting down"))?;
    match tokio::time::timeout(CONTROLLER_REQUEST_LIMIT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(unavailable("the controller is shutting down")),
        Err(_) => Err(unavailable(
            "the controller did not decide in time (no quorum?)",
        )),
    }
}

/// The controller: decides on the Raft leader, one request at a time, so each decision sees
/// the image with every earlier decision applied.
struct Actor {
    me: i32,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<ClusterImage>>,
    cfg: MetaConfig,
    /// Last heartbeat per broker, kept in memory by the active controller only.
    heartbeats: HashMap<i32, Instant>,
    /// The term in which this node caught up as leader (its image holds every committed
    /// entry, and all later entries are its own).
    synced_term: Option<u64>,
    /// When this node became the active controller: brokers get a full session from here.
    session_start: Instant,
    last_rebalance: Instant,
    /// Where probes report a broker whose port refuses connections (its process is gone).
    gone: mpsc::UnboundedSender<Lost>,
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn random() -> u64 {
    uuid::Uuid::new_v4().as_u128() as u64
}

impl Actor {
    async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        mut lost: mpsc::UnboundedReceiver<Lost>,
        mut dead: mpsc::UnboundedReceiver<Lost>,
        mut stop: watch::Receiver<bool>,
    ) {
        let period = (self.cfg.broker_session_timeout / 10)
            .clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Raft's role changes: a node elected leader becomes the active controller at once
        // (fencing a broker that died with the old controller) instead of at its next tick.
        let mut role = self.raft.server_metrics();
        loop {
            // Biased: requests already queued (heartbeats among them) are decided before
            // the tick judges sessions, so a controller that stalled on a slow Raft write
            // does not fence every broker whose heartbeat waited in its queue.
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => return,
                job = jobs.recv() => {
                    let Some((req, reply, received)) = job else { return };
                    let r = self.handle(req, received).await;
                    let _ = reply.send(r);
                }
                _ = tick.tick() => self.tick().await,
                Ok(()) = role.changed() => {
                    if self.is_active() {
                        let _ = self.ensure_leader().await;
                    }
                }
                Some(l) = lost.recv() => self.probe(l),
                Some(l) = dead.recv() => self.fence_dead(l).await,
            }
        }
    }

    fn not_controller(&self) -> ControllerError {
        let leader = self
            .raft
            .metrics()
            .borrow()
            .current_leader
            .map(|l| l as i32);
        ControllerError::not_controller(self.me, leader.filter(|l| *l != self.me))
    }

    /// Checks that this node is the leader and its image is current; on the first call of a
    /// term, waits for the image to catch up and starts everyone's sessions afresh.
    async fn ensure_leader(&mut self) -> Result<(), ControllerError> {
        let term = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader || m.current_leader != Some(self.me as u64) {
                None
            } else {
                Some(m.current_term)
            }
        };
        let Some(term) = term else {
            self.synced_term = None;
            return Err(self.not_controller());
        };
        if self.synced_term == Some(term) {
            return Ok(());
        }
        match tokio::time::timeout(RAFT_WAIT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(node = self.me, "not yet the active controller: {e}");
                return Err(self.not_controller());
            }
            Err(_) => {
                return Err(ControllerError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "controller {}: no quorum answered within {RAFT_WAIT:?}",
                        self.me
                    ),
                ))
            }
        }
        self.synced_term = Some(term);
        self.heartbeats.clear();
        self.session_start = Instant::now();
        self.last_rebalance = Instant::now();
        // A new controller has heard no heartbeat yet; a broker that died with the old
        // controller (combined mode) never will. Probe them all now rather than give each
        // a full session.
        let live: Vec<(i32, i64)> = self
            .image
            .borrow()
            .live_brokers()
            .map(|b| (b.id, b.epoch))
            .collect();
        for (id, broker_epoch) in live {
            self.probe(Lost {
                id,
                broker_epoch,
                at: self.session_start,
            });
        }
        tracing::info!(node = self.me, term, "active controller");
        if self.image.borrow().cluster_id.is_none() {
            let id = self
                .cfg
                .cluster_id
                .clone()
                .unwrap_or_else(controller::new_cluster_id);
            tracing::info!(node = self.me, cluster_id = %id, "new metadata log: writing the cluster id");
            self.write(vec![MetadataRecord::InitCluster { cluster_id: id }])
                .await?;
        }
        Ok(())
    }

    /// Writes one decision as one log entry; returns once it is applied here.
    async fn write(&mut self, records: Vec<MetadataRecord>) -> Result<(), ControllerError> {
        if records.is_empty() {
            return Ok(());
        }
        let size = serde_json::to_vec(&records)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_ENTRY {
            return Err(ControllerError::new(
                ErrorKind::InvalidRequest,
                format!("the decision is {size} bytes of metadata, above the limit of {MAX_ENTRY} for one log entry"),
            ));
        }
        let written =
            tokio::time::timeout(RAFT_WAIT, self.raft.client_write(RecordBatch(records))).await;
        let Ok(written) = written else {
            // It may still commit: the next decision catches up first.
            self.synced_term = None;
            return Err(ControllerError::new(
                ErrorKind::Unavailable,
                format!(
                    "controller {}: the metadata log did not commit within {RAFT_WAIT:?}",
                    self.me
                ),
            ));
        };
        match written {
            Ok(_) => Ok(()),
            Err(e) => {
                self.synced_term = None;
                if let Some(f) = e.forward_to_leader() {
                    let leader = f.leader_id.map(|l| l as i32).filter(|l| *l != self.me);
                    return Err(ControllerError::not_controller(self.me, leader));
                }
                Err(ControllerError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "controller {}: writing to the metadata log failed: {e}",
                        self.me
                    ),
                ))
            }
        }
    }

    fn snapshot(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    async fn handle(&mut self, req: ControllerRequest, received: Instant) -> Reply {
        self.ensure_leader().await?;
        let image = self.snapshot();
        let img = &*image;
        match req {
            ControllerRequest::RegisterBroker {
                id,
                host,
                port,
                endpoints,
                rack,
                incarnation,
            } => {
                let (records, epoch) = controller::register_broker(
                    img,
                    id,
                    &host,
                    port,
                    endpoints,
                    rack,
                    incarnation,
                )?;
                self.write(records).await?;
                tracing::info!(broker = id, epoch, "broker registered");
                Ok(ControllerReply::BrokerEpoch(epoch))
            }
            ControllerRequest::UnregisterBroker { id } => {
                self.write(controller::unregister_broker(img, id)?).await?;
                self.heartbeats.remove(&id);
                tracing::info!(broker = id, "broker unregistered");
                Ok(ControllerReply::Done)
            }
            ControllerRequest::Heartbeat {
                id,
                broker_epoch,
                want_shutdown,
            } => {
                let (records, reply) = controller::heartbeat(img, id, broker_epoch, want_shutdown)?;
                if !records.is_empty() {
                    tracing::info!(
                        broker = id,
                        want_shutdown,
                        "broker {}",
                        if want_shutdown {
                            "shut down (controlled)"
                        } else {
                            "unfenced"
                        }
                    );
                }
                self.write(records).await?;
                let last = self.heartbeats.entry(id).or_insert(received);
                *last = (*last).max(received);
                Ok(ControllerReply::Heartbeat(reply))
            }
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let (records, results) =
                    controller::create_topics(img, &self.cfg.defaults, &topics, random());
                if !validate_only {
                    if let Err(e) = self.write(records).await {
                        return Ok(ControllerReply::Topics(
                            results.into_iter().map(|r| r.and(Err(e.clone()))).collect(),
                        ));
                    }
                }
                Ok(ControllerReply::Topics(results))
            }
            ControllerRequest::DeleteTopics { names } => {
                let (records, results) = controller::delete_topics(img, &names);
                if let Err(e) = self.write(records).await {
                    return Ok(ControllerReply::Deleted(
                        results.into_iter().map(|r| r.and(Err(e.clone()))).collect(),
                    ));
                }
                Ok(ControllerReply::Deleted(results))
            }
            ControllerRequest::CreatePartitions {
                topic,
                total,
                assignments,
            } => {
                let records = controller::create_partitions(
                    img,
                    &topic,
                    total,
                    assignments.as_deref(),
                    random(),
                )?;
                self.write(records).await?;
                Ok(ControllerReply::Done)
            }
            ControllerRequest::AlterPartition(req) => {
                let (records, state) = controller::alter_partition(img, &req)?;
                self.write(records).await?;
                Ok(ControllerReply::Partition(state))
            }
            ControllerRequest::AlterTopicConfigs { topic, configs } => {
                let records = controller::alter_topic_configs(img, &topic, configs)?;
                self.write(records).await?;
                Ok(ControllerReply::Done)
            }
            ControllerRequest::AlterBrokerConfigs { configs } => {
                self.write(controller::alter_broker_configs(configs))
                    .await?;
                Ok(ControllerReply::Done)
            }
            ControllerRequest::ElectLeaders {
                partitions,
                preferred,
            } => {
                let (records, results) =
                    controller::elect_leaders(img, partitions.as_deref(), preferred);
                if let Err(e) = self.write(records).await {
                    return Ok(ControllerReply::Elected(
                        results
                            .into_iter()
                            .map(|(k, r)| (k, r.and(Err(e.clone()))))
                            .collect(),
                    ));
                }
                Ok(ControllerReply::Elected(results))
            }
            ControllerRequest::Reassign {
                topic,
                partition,
                replicas,
            } => {
                let records = controller::reassign(img, &topic, partition, replicas.as_deref())?;
                self.write(records).await?;
                Ok(ControllerReply::Done)
            }
            ControllerRequest::DescribeQuorum => {
                Ok(ControllerReply::Quorum(self.quorum_state(img)))
            }
            ControllerRequest::PeerClosed { id, broker_epoch } => {
                tracing::debug!(
                    broker = id,
                    broker_epoch,
                    "a replica fetch connection of this broker closed: probing it"
                );
                self.probe(Lost {
                    id,
                    broker_epoch,
                    at: received,
                });
                Ok(ControllerReply::Done)
            }
        }
    }

    /// The quorum as this leader sees it: Raft's term is the epoch, the applied index the
    /// high watermark, each voter's next index from replication progress.
    fn quorum_state(&self, img: &ClusterImage) -> crate::rpc::QuorumState {
        let m = self.raft.metrics().borrow().clone();
        let next = |id: u64| -> i64 {
            if id == self.me as u64 {
                return m.last_log_index.map_or(0, |i| i as i64 + 1);
            }
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map_or(-1, |log_id| log_id.index as i64 + 1)
        };
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        crate::rpc::QuorumState {
            leader: m.current_leader.map_or(-1, |l| l as i32),
            epoch: m.current_term.min(i32::MAX as u64) as i32,
            high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
            voters: voters
                .iter()
                .map(|&id| crate::rpc::QuorumReplica {
                    id: id as i32,
                    log_end_offset: next(id),
                })
                .collect(),
            observers: img
                .brokers
                .keys()
                .filter(|id| !voters.contains(&(**id as u64)))
                .map(|&id| crate::rpc::QuorumReplica {
                    id,
                    log_end_offset: -1,
                })
                .collect(),
        }
    }

    /// A broker's heartbeat connection ended. If this is the active controller, probe the
    /// broker's port: a refused connection means its process is gone (kill -9, a crash),
    /// and waiting out the session timeout would only delay failover. A port that accepts
    /// (a dropped connection, a stopped process whose kernel still accepts) or does not
    /// answer (a network partition) leaves it to the session timeout.
    fn probe(&self, l: Lost) {
        if !self.is_active() {
            return;
        }
        let Some(addr) = self
            .image
            .borrow()
            .brokers
            .get(&l.id)
            .filter(|b| !b.fenced && b.epoch == l.broker_epoch && b.id != self.me)
            .map(|b| format!("{}:{}", b.host, b.port))
        else {
            return;
        };
        let gone = self.gone.clone();
        tokio::spawn(async move {
            if refuses_a_probe(&addr).await {
                let _ = gone.send(l);
            } else {
                tracing::debug!(broker = l.id, %addr, "broker's port did not refuse: leaving it to the session timeout");
            }
        });
    }

    /// Fences a broker whose heartbeat connection closed and whose port refuses
    /// connections, unless it heartbeated again since.
    async fn fence_dead(&mut self, l: Lost) {
        if !self.is_active() || self.ensure_leader().await.is_err() {
            return;
        }
        if self.heartbeats.get(&l.id).is_some_and(|t| *t > l.at) {
            return;
        }
        let image = self.snapshot();
        let same = image
            .brokers
            .get(&l.id)
            .is_some_and(|b| !b.fenced && b.epoch == l.broker_epoch);
        if !same {
            return;
        }
        tracing::warn!(broker = l.id, "broker's controller connection closed and its port refuses connections: fencing it now");
        let _ = self.write(controller::fence_broker(&image, l.id)).await;
    }

    fn is_active(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.me as u64)
    }

    /// On the active controller: fences brokers whose session expired, and moves leadership
    /// back to preferred leaders when that is enabled and due.
    async fn tick(&mut self) {
        if !self.is_active() {
            self.synced_term = None;
            return;
        }
        if self.ensure_leader().await.is_err() {
            return;
        }
        let now = Instant::now();
        loop {
            let image = self.snapshot();
            let expired = image.live_brokers().map(|b| b.id).find(|id| {
                let last = self
                    .heartbeats
                    .get(id)
                    .copied()
                    .unwrap_or(self.session_start)
                    .max(self.session_start);
                now.duration_since(last) > self.cfg.broker_session_timeout
            });
            let Some(id) = expired else { break };
            tracing::warn!(broker = id, timeout = ?self.cfg.broker_session_timeout, "broker missed its heartbeats: fencing it");
            if self
                .write(controller::fence_broker(&image, id))
                .await
                .is_err()
            {
                return;
            }
        }
        if self.cfg.auto_leader_rebalance
            && now.duration_since(self.last_rebalance) >= self.cfg.leader_imbalance_check_interval
        {
            self.last_rebalance = now;
            let image = self.snapshot();
            let (records, _) = controller::elect_leaders(&image, None, true);
            if !records.is_empty() {
                tracing::info!(
                    partitions = records.len(),
                    "moving leadership back to preferred leaders"
                );
                let _ = self.write(records).await;
            }
        }
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    /// A dying process may still accept on its listening socket for a moment after its
    /// other connections closed: a refusal at a later probe still says it is gone (the
    /// first accept used to end the probing and leave the broker to its session timeout).
    #[tokio::test]
    async fn a_port_that_accepts_once_then_refuses_is_gone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(listener);
        });
        assert!(refuses_probes(&addr, &[Duration::ZERO, Duration::from_millis(30)]).await);
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn a_port_that_keeps_accepting_is_alive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert!(!refuses_probes(&addr, &PROBE_PAUSES).await);
        drop(listener);
        assert!(refuses_probes(&addr, &PROBE_PAUSES).await);
    }
}
