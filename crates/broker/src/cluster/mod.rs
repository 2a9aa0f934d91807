//! Every node's link to the metadata quorum (`runnel-meta`); a node without
//! `controller.quorum.voters` is a cluster of one, its own single voter.
//!
//! - starts the quorum voter when `process.roles` includes `controller`;
//! - on a single node's first start, imports the files an older version kept (`import`);
//! - registers the broker and heartbeats (a broker that stops is fenced by the controller
//!   and its partitions get new leaders from their ISR);
//! - applies every new metadata image to the local partitions (`reconcile`): creates and
//!   deletes local logs, makes partitions leaders or followers, starts and stops fetchers;
//! - sends ISR changes to the controller (AlterPartition) for partitions it leads;
//! - on SIGTERM, a controlled shutdown: asks the controller to move leadership away first.

mod closed_peers;
pub mod fetcher;
mod import;
mod markers;
pub mod reconcile;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runnel_meta::{
    BrokerImage, ClusterImage, ControllerClient, ControllerError, ErrorKind, MetaConfig, MetaNode,
};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::broker::Broker;
use crate::cluster::fetcher::Fetchers;
use crate::error::{BrokerError, ErrorCode};
use crate::storage::partition::Partition;

/// How long Metadata keeps listing a broker after this broker saw it fenced. librdkafka
/// (2.x) re-delegates a partition whose leader it is just moving away from a broker that
/// vanished from the same response to its internal broker, and only finds the new leader
/// again at its once-a-second topic scan: listing the fenced broker a moment longer lets
/// the move finish first, so a failover does not pay that second.
const FENCED_STILL_LISTED: Duration = Duration::from_secs(3);

/// An ISR the leader wants the controller to record.
pub struct IsrChange {
    pub partition: Arc<Partition>,
    pub topic_id: Uuid,
    pub proposal: crate::storage::replication::ProposedIsr,
}

pub struct Cluster {
    pub meta: Option<Arc<MetaNode>>,
    pub controller: ControllerClient,
    pub image: watch::Receiver<Arc<ClusterImage>>,
    /// The applied index of the last image `reconcile` made this broker match: start-up
    /// waits for it, so a restarted broker serves no request from a stale image (a link,
    /// topic or group config the quorum has but this broker has not applied yet).
    reconciled: watch::Sender<u64>,
    pub broker_epoch: AtomicI64,
    pub incarnation: Uuid,
    pub fetchers: Fetchers,
    isr_changes: mpsc::UnboundedSender<IsrChange>,
    /// For background work that calls back into the broker (transaction markers).
    broker: std::sync::Weak<Broker>,
    /// Fenced brokers and when this broker first saw them fenced (`listed_brokers`).
    fenced_seen: parking_lot::Mutex<HashMap<i32, tokio::time::Instant>>,
    /// Peers whose replica fetch connection just closed (`report_peer_closed`), for the
    /// controller's report and Metadata's wait (`await_leader_decisions`).
    closed_peers: closed_peers::ClosedPeers,
    /// When this broker last became the leader of a partition (`reconcile`): a
    /// follower's fetch parked here does not name that partition yet, and the follower
    /// adds it only to its next fetch, so parked replica fetches answer at once, and for
    /// [`NEW_LEADERSHIP_GRACE`] after, wait at most [`NEW_LEADERSHIP_FETCH_WAIT`]
    /// (`handlers/fetch.rs`) instead of `replica.fetch.wait.max.ms`, which an acks=all
    /// write to the new leader would otherwise wait out (issue 19).
    new_leaderships: watch::Sender<Option<tokio::time::Instant>>,
}

impl Cluster {
    /// Joins the cluster: starts the voter (combined mode), registers this broker, and
    /// starts the heartbeat, reconcile and ISR tasks.
    /// `listener`: the voter's port, already bound (a single node's loopback port).
    pub async fn start(
        broker: &Arc<Broker>,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<Arc<Cluster>, BrokerError> {
        let cfg = &broker.config.cluster;
        let me = broker.node_id();
        if !(0..1024).contains(&me) {
            return Err(BrokerError::new(
                ErrorCode::InvalidConfig,
                format!("node.id {me} is out of range: a cluster's node ids must be 0 to 1023"),
            ));
        }
        let meta = if cfg.controller_role {
            if !cfg.voters.iter().any(|(id, _)| *id == me) {
                return Err(BrokerError::new(
                    ErrorCode::InvalidConfig,
                    format!("process.roles includes controller, but node.id {me} is not in controller.quorum.voters"),
                ));
            }
            let dir = cfg.metadata_dir.clone().unwrap_or_else(|| {
                broker.config.log_dirs[0]
                    .join("__cluster_metadata")
                    .join("quorum")
            });
            let mut mc = MetaConfig::new(me, cfg.voters.clone(), dir);
            mc.broker_session_timeout = Duration::from_millis(cfg.broker_session_timeout_ms);
            // Kafka's KRaft timers: a voter stands for election after a random wait in
            // [election, 2 x election); the leader's heartbeat stays well inside both.
            let election = cfg.quorum_election_timeout_ms;
            mc.election_timeout_min = Duration::from_millis(election);
            mc.election_timeout_max = Duration::from_millis(election * 2);
            mc.heartbeat_interval =
                Duration::from_millis((cfg.quorum_fetch_timeout_ms / 4).min(election / 4).max(1));
            mc.defaults.num_partitions = broker.config.num_partitions;
            mc.cluster_id = Some(broker.cluster_id.clone());
            mc.defaults.default_replication_factor =
                broker.config.default_replication_factor as i32;
            mc.transport = broker.security.quorum.clone();
            let node = MetaNode::start(mc, listener).await.map_err(|e| {
                BrokerError::new(
                    ErrorCode::KafkaStorageError,
                    format!("cannot start the metadata quorum voter: {e}"),
                )
            })?;
            Some(node)
        } else {
            None
        };
        let controller = ControllerClient::new(cfg.voters.clone())
            .with_transport(broker.security.quorum.clone());
        let image = match &meta {
            Some(m) => m.image(),
            None => controller.watch_image(),
        };
        let (isr_tx, isr_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            meta,
            controller,
            image,
            broker_epoch: AtomicI64::new(-1),
            incarnation: Uuid::new_v4(),
            fetchers: Fetchers::default(),
            isr_changes: isr_tx,
            broker: Arc::downgrade(broker),
            reconciled: watch::channel(0).0,
            fenced_seen: Default::default(),
            closed_peers: Default::default(),
            new_leaderships: watch::channel(None).0,
        });
        // Before any task that may ask for it starts.
        let _ = broker.cluster.set(cluster.clone());
        if cfg.broker_role {
            cluster.register(broker).await?;
            tokio::spawn(heartbeat_loop(broker.clone(), cluster.clone()));
            tokio::spawn(reconcile::run(broker.clone(), cluster.clone()));
            tokio::spawn(isr_loop(broker.clone(), cluster.clone(), isr_rx));
            // Like a Kafka broker, be RUNNING only once the controller has unfenced us:
            // before that, clients would get metadata that leaves this broker out.
            let me = broker.node_id();
            if !cluster
                .wait_for_image(|img| img.brokers.get(&me).is_some_and(|b| !b.fenced))
                .await
            {
                tracing::warn!("not unfenced by the controller yet; serving anyway");
            } else {
                if broker.config.cluster.single_voter {
                    import::run(broker, &cluster).await?;
                } else {
                    import::set_aside(broker);
                }
                // Kafka's broker enables request processing only once it has caught up
                // with the metadata log; the unfencing record is in the image, so wait
                // until reconcile has applied that image locally too.
                let target = cluster.current_image().applied_index;
                if !cluster.wait_reconciled(target).await {
                    tracing::warn!(
                        index = target,
                        "the metadata image is not applied locally yet; serving anyway"
                    );
                }
            }
        }
        Ok(cluster)
    }

    /// Registers (or re-registers) this broker; retries until a controller answers.
    async fn register(&self, broker: &Broker) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let result = self
                .controller
                .register_broker(
                    broker.node_id(),
                    &broker.advertised_host,
                    broker.advertised_port,
                    broker.registered_endpoints(),
                    broker.config.rack.clone(),
                    self.incarnation,
                )
                .await;
            match result {
                Ok(epoch) => {
                    self.broker_epoch.store(epoch, Ordering::Release);
                    tracing::info!(
                        node = broker.node_id(),
                        epoch,
                        "registered with the controller"
                    );
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, "waiting for the controller quorum to register");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(controller_error(e)),
            }
        }
    }

    pub fn current_image(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    /// Notes when each broker of `image` was first seen fenced (called for every image).
    pub(crate) fn note_fenced(&self, image: &ClusterImage) {
        note_fenced(
            &mut self.fenced_seen.lock(),
            image,
            tokio::time::Instant::now(),
        );
    }

    /// The brokers Metadata lists: the live ones, and a fenced one for
    /// [`FENCED_STILL_LISTED`] after this broker saw it fenced (see there why).
    pub fn listed_brokers<'a>(&self, image: &'a ClusterImage) -> Vec<&'a BrokerImage> {
        listed_brokers(&self.fenced_seen.lock(), image, tokio::time::Instant::now())
    }

    /// The broker id to give clients as "the controller": any live broker forwards admin
    /// requests to the active controller (KRaft's way), so the quorum leader when it is a
    /// live broker, else this one, else any live broker; never a fenced or absent one.
    pub fn controller_id_for_clients(&self, local_id: i32) -> i32 {
        let image = self.current_image();
        self.meta
            .as_ref()
            .and_then(|m| m.leader())
            .filter(|id| image.is_live(*id))
            .or_else(|| image.is_live(local_id).then_some(local_id))
            .or_else(|| image.live_brokers().next().map(|b| b.id))
            .unwrap_or(local_id)
    }

    /// Writes cluster-wide config records (ACLs, quotas, SCRAM credentials, group
    /// configs, links; None deletes a key) through the controller and waits (bounded)
    /// until this broker's image holds them.
    pub async fn write_config_records(
        &self,
        records: std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<(), BrokerError> {
        if records.is_empty() {
            return Ok(());
        }
        self.controller
            .alter_broker_configs(records.clone())
            .await
            .map_err(controller_error)?;
        self.wait_for_image(|img| {
            records
                .iter()
                .all(|(k, v)| img.broker_configs.get(k) == v.as_ref())
        })
        .await;
        Ok(())
    }

    /// Waits (at most 10 s) until reconcile has applied the image at `index` or a later
    /// one to this broker; false on the deadline.
    pub async fn wait_reconciled(&self, index: u64) -> bool {
        let mut rx = self.reconciled.subscribe();
        let caught_up =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|i| *i >= index)).await;
        matches!(caught_up, Ok(Ok(_)))
    }

    /// Waits until the image satisfies `ready`, or the deadline passes.
    pub async fn wait_for_image(&self, ready: impl Fn(&ClusterImage) -> bool) -> bool {
        let mut rx = self.image.clone();
        let wait = async {
            loop {
                if ready(&rx.borrow_and_update()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or(false)
    }

    /// Writes a transaction's markers: at once to the partitions this broker leads (so
    /// the answer to EndTxn finds them there, as on a single node every partition), and
    /// in the background to the leaders of the others; once every marker is replicated,
    /// records the transaction complete.
    pub fn send_markers(
        &self,
        tid: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<(String, i32)>,
    ) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let mut written = Vec::new();
        let mut rest = Vec::new();
        for (topic, index) in partitions {
            let local = broker
                .topics
                .partition(&topic, index)
                .filter(|p| p.replica.lock().is_leader());
            let appended = local.and_then(|p| {
                broker
                    .append_marker(&p, producer_id, epoch, commit, 0)
                    .ok()
                    .map(|at| (p, at))
            });
            match appended {
                Some((p, offset)) => written.push(((topic, index), p, offset)),
                None => rest.push((topic, index)),
            }
        }
        tokio::spawn(async move {
            for (tp, p, at) in written {
                if p.wait_acknowledged(at).await.is_err() {
                    // Not replicated here (leadership moved): deliver it again.
                    rest.push(tp);
                }
            }
            if markers::send(&broker, producer_id, epoch, commit, rest).await {
                broker
                    .txns
                    .markers_written(&broker, &tid, producer_id, commit);
            } else {
                tracing::error!(transactional_id = %tid, "transaction markers not delivered in time; the next coordinator of this id will finish them");
            }
        });
    }

    /// A replica fetch connection to or from peer broker `id` ended by EOF or reset (not a
    /// timeout): the process may be gone. The controller is told at once, so it probes
    /// the peer's port and fences it without waiting for its session timeout (issue 19);
    /// a live peer's port accepts and nothing happens. In the background, bounded.
    pub fn report_peer_closed(&self, id: i32) {
        let Some(epoch) = self
            .current_image()
            .brokers
            .get(&id)
            .filter(|b| !b.fenced)
            .map(|b| b.epoch)
        else {
            return;
        };
        if !self
            .closed_peers
            .note(id, epoch, tokio::time::Instant::now())
        {
            return;
        }
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let ask = broker.cluster().controller.peer_closed(id, epoch);
            match tokio::time::timeout(Duration::from_secs(3), ask).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(peer = id, error = %e, "could not report a closed replica connection")
                }
                Err(_) => tracing::debug!(
                    peer = id,
                    "no controller answered a closed replica connection's report"
                ),
            }
        });
    }

    /// Waits (at most [`closed_peers::UNDECIDED_FOR`] after the close) while a peer for
    /// which `leads` holds in the current image had a replica connection close and is not
    /// fenced yet: the controller is deciding whether its process is gone, and an answer
    /// now would send clients back to a dead leader (see `closed_peers`). Returns at once
    /// when there is no such peer, which is the case outside a failover, after
    /// [`closed_peers::CLOSE_NOTICE`] when another broker leads what is asked.
    pub async fn await_leader_decisions(
        &self,
        me: i32,
        leads: impl Fn(&ClusterImage, i32) -> bool,
    ) {
        // A client whose connection to a killed leader closed can ask before this broker's
        // tasks have handled the close of their own connections to it, closed at the same
        // instant (a raw Metadata answered in 0.2 ms named the dead leader, and librdkafka
        // asked again only a second later): give them that moment.
        let others_lead = {
            let image = self.image.borrow();
            let any = image
                .live_brokers()
                .any(|b| b.id != me && leads(&image, b.id));
            any
        };
        if others_lead {
            tokio::time::sleep(closed_peers::CLOSE_NOTICE).await;
        }
        let started = tokio::time::Instant::now();
        let mut rx = self.image.clone();
        let undecided = {
            let image = rx.borrow_and_update();
            let mut u = self.closed_peers.undecided(&image, started);
            u.retain(|u| leads(&image, u.id));
            u
        };
        let Some(until) = undecided.iter().map(|u| u.until).max() else {
            return;
        };
        let decided = tokio::time::timeout_at(until, async {
            loop {
                if rx.changed().await.is_err() {
                    return;
                }
                let image = rx.borrow_and_update();
                if !undecided
                    .iter()
                    .any(|u| u.pending(&image) && leads(&image, u.id))
                {
                    return;
                }
            }
        })
        .await
        .is_ok();
        let peers: Vec<i32> = undecided.iter().map(|u| u.id).collect();
        tracing::info!(
            ?peers,
            waited_ms = started.elapsed().as_millis() as u64,
            decided,
            "Metadata waited for the controller's decision on leaders whose replica connection closed"
        );
    }

    /// This broker just became the leader of a partition: wakes the parked replica fetches.
    pub(crate) fn note_new_leadership(&self) {
        self.new_leaderships
            .send_replace(Some(tokio::time::Instant::now()));
    }

    /// Changes when this broker becomes the leader of a partition (`note_new_leadership`).
    pub fn new_leaderships(&self) -> watch::Receiver<Option<tokio::time::Instant>> {
        self.new_leaderships.subscribe()
    }

    /// The longest a follower's fetch may park here now: `max_wait`, or
    /// [`NEW_LEADERSHIP_FETCH_WAIT`] within [`NEW_LEADERSHIP_GRACE`] of this broker taking
    /// a partition over (a follower that applied that change a moment after this broker
    /// did sends one more fetch without the partition; it must not park for long).
    pub fn replica_fetch_wait(&self, max_wait: Duration) -> Duration {
        replica_fetch_wait(
            *self.new_leaderships.borrow(),
            tokio::time::Instant::now(),
            max_wait,
        )
    }

    /// Asks the controller to record a new ISR for a partition this broker leads.
    pub fn request_isr_change(&self, change: IsrChange) {
        let _ = self.isr_changes.send(change);
    }

    /// Controlled shutdown (Kafka's): ask the controller to move leadership of every
    /// partition this broker leads elsewhere, and wait (bounded) until it has.
    pub async fn controlled_shutdown(&self, broker: &Broker) {
        // Bounded: when the quorum itself is going away (the whole cluster stopping), no
        // controller will answer, and there is nobody to hand leadership to anyway.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            let epoch = self.broker_epoch.load(Ordering::Acquire);
            let ask = self.controller.heartbeat(broker.node_id(), epoch, true);
            match tokio::time::timeout(Duration::from_secs(1), ask).await {
                Ok(Ok(reply)) if reply.shutdown_ready => {
                    tracing::info!("controlled shutdown: leadership moved away");
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "controlled shutdown: controller refused")
                }
                Err(_) => tracing::info!("controlled shutdown: no controller answered"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::warn!("controlled shutdown did not finish in time; stopping anyway");
    }

    pub async fn shutdown(&self) {
        self.fetchers.stop_all();
        if let Some(m) = &self.meta {
            m.shutdown().await;
        }
    }
}

async fn heartbeat_loop(broker: Arc<Broker>, cluster: Arc<Cluster>) {
    let interval = Duration::from_millis(broker.config.cluster.broker_heartbeat_interval_ms);
    let mut first = true;
    loop {
        // The first heartbeat goes at once: it is what unfences a registered broker.
        if !first {
            tokio::time::sleep(interval).await;
        }
        first = false;
        let epoch = cluster.broker_epoch.load(Ordering::Acquire);
        match cluster
            .controller
            .heartbeat(broker.node_id(), epoch, false)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::StaleBrokerEpoch => {
                tracing::warn!(error = %e, "the controller does not know this broker's epoch; registering again");
                let _ = cluster.register(&broker).await;
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}

/// Sends ISR changes to the controller one at a time and applies what it decided; also
/// shrinks ISRs of followers that fell behind.
async fn isr_loop(
    broker: Arc<Broker>,
    cluster: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<IsrChange>,
) {
    let lag_max = broker.config.cluster.replica_lag_time_max_ms;
    let mut check = tokio::time::interval(Duration::from_millis((lag_max / 2).clamp(50, 5_000)));
    // Proposals to send again, by when (and arrival order, for equal times).
    let mut retries: BTreeMap<(tokio::time::Instant, u64), IsrChange> = BTreeMap::new();
    let mut queued = 0u64;
    loop {
        let next_retry = retries.keys().next().map(|(at, _)| *at);
        let change = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => return },
            _ = tokio::time::sleep_until(next_retry.unwrap_or_else(tokio::time::Instant::now)), if next_retry.is_some() => {
                match retries.pop_first() { Some((_, c)) => c, None => continue }
            }
            _ = check.tick() => {
                for t in broker.topics.all() {
                    for p in &t.partitions {
                        if let Some(proposal) = crate::storage::replication::lagging_isr(p, lag_max, broker.clock.now_ms()) {
                            tracing::info!(topic = %p.topic, partition = p.index, isr = ?proposal.isr, "shrinking ISR: followers fell behind");
                            let _ = cluster.isr_changes.send(IsrChange { partition: p.clone(), topic_id: t.id, proposal });
                        }
                    }
                }
                continue;
            }
        };
        let p = &change.partition;
        let proposal = &change.proposal;
        let result = cluster
            .controller
            .alter_partition(
                broker.node_id(),
                cluster.broker_epoch.load(Ordering::Acquire),
                change.topic_id,
                p.index,
                proposal.leader_epoch,
                proposal.partition_epoch,
                proposal.isr.clone(),
            )
            .await;
        match result {
            Ok(state) => {
                reconcile::apply_partition(&broker, &cluster, p, &state);
                crate::storage::replication::maybe_advance_high_watermark(p);
                p.wake();
            }
            Err(e) => {
                // Kafka's maximal-ISR rule: until the controller's answer is known, the high
                // watermark counts the proposed ISR too. A timeout or a lost controller may
                // still have committed the change (an expansion the controller recorded
                // could elect the newcomer), and a refusal for a stale epoch means a newer
                // state is on its way in the image (which replaces the pending ISR). So the
                // pending ISR is dropped only when the controller says the change was not
                // made (INELIGIBLE_REPLICA); otherwise the proposal is sent again until
                // the image moves past it.
                let mut r = p.replica.lock();
                let still_pending = r.partition_epoch == proposal.partition_epoch
                    && r.pending_isr.as_ref() == Some(&proposal.isr);
                if !still_pending {
                    continue;
                }
                if e.kind == ErrorKind::IneligibleReplica {
                    tracing::info!(topic = %p.topic, partition = p.index, error = %e, "AlterPartition refused");
                    r.pending_isr = None;
                    continue;
                }
                drop(r);
                let transient = matches!(
                    e.kind,
                    ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::NotController
                );
                tracing::info!(topic = %p.topic, partition = p.index, error = %e, "AlterPartition not answered or refused; the proposed ISR stays pending and is sent again");
                let backoff = Duration::from_millis(if transient { 200 } else { 1000 });
                queued += 1;
                retries.insert((tokio::time::Instant::now() + backoff, queued), change);
            }
        }
    }
}

/// Records `now` for each broker fenced in `image` and not yet in `seen`; forgets the
/// ones no longer fenced (or gone).
fn note_fenced(
    seen: &mut HashMap<i32, tokio::time::Instant>,
    image: &ClusterImage,
    now: tokio::time::Instant,
) {
    seen.retain(|id, _| image.brokers.get(id).is_some_and(|b| b.fenced));
    for b in image.brokers.values().filter(|b| b.fenced) {
        seen.entry(b.id).or_insert(now);
    }
}

/// The unfenced brokers of `image`, and the fenced ones seen fenced less than
/// [`FENCED_STILL_LISTED`] before `now`.
fn listed_brokers<'a>(
    seen: &HashMap<i32, tokio::time::Instant>,
    image: &'a ClusterImage,
    now: tokio::time::Instant,
) -> Vec<&'a BrokerImage> {
    let recent = |id: &i32| {
        seen.get(id)
            .is_some_and(|at| now.duration_since(*at) < FENCED_STILL_LISTED)
    };
    image
        .brokers
        .values()
        .filter(|b| !b.fenced || recent(&b.id))
        .collect()
}

/// How long after this broker took a partition over its followers' fetches park briefly.
const NEW_LEADERSHIP_GRACE: Duration = Duration::from_secs(1);
/// How long a follower's fetch parks during [`NEW_LEADERSHIP_GRACE`].
const NEW_LEADERSHIP_FETCH_WAIT: Duration = Duration::from_millis(20);

fn replica_fetch_wait(
    last_new_leadership: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
    max_wait: Duration,
) -> Duration {
    match last_new_leadership {
        Some(at) if now.duration_since(at) < NEW_LEADERSHIP_GRACE => {
            max_wait.min(NEW_LEADERSHIP_FETCH_WAIT)
        }
        _ => max_wait,
    }
}

/// The Kafka error code for a controller error.
pub fn error_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::NotController => ErrorCode::NotController,
        ErrorKind::InvalidReplicationFactor => ErrorCode::InvalidReplicationFactor,
        ErrorKind::InvalidReplicaAssignment => ErrorCode::InvalidReplicaAssignment,
        ErrorKind::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
        ErrorKind::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
        ErrorKind::InvalidPartitions => ErrorCode::InvalidPartitions,
        ErrorKind::InvalidTopic => ErrorCode::InvalidTopic,
        ErrorKind::FencedLeaderEpoch => ErrorCode::FencedLeaderEpoch,
        ErrorKind::NotLeaderOrFollower => ErrorCode::NotLeaderOrFollower,
        ErrorKind::InvalidRequest => ErrorCode::InvalidRequest,
        ErrorKind::NoReassignmentInProgress => ErrorCode::NoReassignmentInProgress,
        ErrorKind::PreferredLeaderNotAvailable => ErrorCode::PreferredLeaderNotAvailable,
        ErrorKind::EligibleLeadersNotAvailable => ErrorCode::EligibleLeadersNotAvailable,
        ErrorKind::ElectionNotNeeded => ErrorCode::ElectionNotNeeded,
        ErrorKind::Timeout => ErrorCode::RequestTimedOut,
        // Kafka clients retry NOT_CONTROLLER; the controller was busy or moving.
        ErrorKind::Unavailable => ErrorCode::NotController,
        _ => ErrorCode::UnknownServerError,
    }
}

pub fn controller_error(e: ControllerError) -> BrokerError {
    BrokerError::new(error_code(e.kind), e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of brokers `(id, fenced)`, each at broker epoch 1.
    pub(super) fn image(fenced: &[(i32, bool)]) -> ClusterImage {
        let mut img = ClusterImage::default();
        for &(id, f) in fenced {
            img.brokers.insert(
                id,
                BrokerImage {
                    id,
                    host: "127.0.0.1".into(),
                    port: 9092 + id,
                    endpoints: Vec::new(),
                    rack: None,
                    epoch: 1,
                    incarnation: Uuid::nil(),
                    fenced: f,
                },
            );
        }
        img
    }

    fn ids(v: Vec<&BrokerImage>) -> Vec<i32> {
        v.into_iter().map(|b| b.id).collect()
    }

    #[test]
    fn follower_fetches_park_briefly_just_after_a_leadership_change() {
        let t0 = tokio::time::Instant::now();
        let max = Duration::from_millis(500);
        assert_eq!(replica_fetch_wait(None, t0, max), max);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            replica_fetch_wait(Some(t1), t1 + Duration::from_millis(10), max),
            NEW_LEADERSHIP_FETCH_WAIT
        );
        assert_eq!(
            replica_fetch_wait(Some(t1), t1, Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        assert_eq!(
            replica_fetch_wait(Some(t1), t1 + NEW_LEADERSHIP_GRACE, max),
            max
        );
    }

    #[test]
    fn a_fenced_broker_stays_listed_for_a_moment_then_goes() {
        let t0 = tokio::time::Instant::now();
        let mut seen = HashMap::new();
        let all_live = image(&[(1, false), (2, false), (3, false)]);
        note_fenced(&mut seen, &all_live, t0);
        assert_eq!(ids(listed_brokers(&seen, &all_live, t0)), vec![1, 2, 3]);
        // Broker 3 fenced: still listed right after, gone once the moment has passed.
        let fenced = image(&[(1, false), (2, false), (3, true)]);
        let t1 = t0 + Duration::from_secs(10);
        note_fenced(&mut seen, &fenced, t1);
        assert_eq!(ids(listed_brokers(&seen, &fenced, t1)), vec![1, 2, 3]);
        let later = t1 + FENCED_STILL_LISTED - Duration::from_millis(1);
        // A later image does not restart the moment.
        note_fenced(&mut seen, &fenced, later);
        assert_eq!(ids(listed_brokers(&seen, &fenced, later)), vec![1, 2, 3]);
        let after = t1 + FENCED_STILL_LISTED;
        assert_eq!(ids(listed_brokers(&seen, &fenced, after)), vec![1, 2]);
        // Unfenced, then fenced again: a new moment from the second fencing.
        note_fenced(&mut seen, &all_live, after);
        assert!(seen.is_empty());
        let again = after + Duration::from_secs(1);
        note_fenced(&mut seen, &fenced, again);
        assert_eq!(ids(listed_brokers(&seen, &fenced, again)), vec![1, 2, 3]);
    }
}
