//! The broker's shared state: configuration, topics, identity, offline log dirs. One
//! `Broker` per process, shared by every connection.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::BrokerConfig;
use crate::coordinators::groups::GroupCoordinator;
use crate::coordinators::txn::TxnCoordinator;
use crate::error::BrokerError;
use crate::handlers::fetch_session::FetchSessions;
use crate::storage::topics::{write_file_atomically, TopicRegistry};

/// Producer ids are handed out from blocks persisted ahead of use, so an id is never
/// issued twice, even across a crash (the rest of a block is skipped after a restart).
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Thread-safe; shared as `Arc<Broker>`.
pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub topics: TopicRegistry,
    pub cluster_id: String,
    /// The inter-broker listener's advertised host and port (what other brokers and the
    /// HTTP API are told).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Every broker listener's advertised (host, port), by listener name: clients are
    /// told the endpoints of the listener they came in on.
    pub endpoints: std::collections::BTreeMap<String, (String, u16)>,
    producer_ids: Mutex<ProducerIdBlock>,
    pub fetch_sessions: FetchSessions,
    pub groups: GroupCoordinator,
    /// Share groups (KIP-932): membership, share-partitions, share sessions.
    pub shares: crate::coordinators::share::Shares,
    pub txns: TxnCoordinator,
    pub metrics: crate::metrics::Metrics,
    /// The link to the metadata quorum (set by `Cluster::start`; read it with `cluster()`).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// `<log dir>/.lock` of every log dir, held while the broker lives: a second broker
    /// on the same dirs refuses to start.
    _dir_locks: Vec<runnel_log::DirLock>,
    /// Open client connections and the request bytes they hold, with their bounds.
    pub connections: Arc<crate::server::connections::Connections>,
    /// ACLs and the authorization decision (`authorizer.class.name`).
    pub authz: crate::authz::Authz,
    /// Client quotas (AlterClientQuotas) and their rate sensors.
    pub quotas: crate::server::quota::Quotas,
    /// TLS acceptors, SCRAM credentials, and how to reach peers securely.
    pub security: crate::server::security::Security,
    /// Cluster links and their mirror topics (`crate::mirror`).
    pub links: crate::mirror::Links,
    /// Internal topics asked of the controller and not answered yet
    /// (`Host::ensure_internal_topic`).
    creating_internal: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// The time the coordinators' timers and the ISR lag check read (the machine's;
    /// tests inject a `ManualClock` through `Server::start_with_clock`).
    pub clock: Arc<dyn runnel_core::Clock>,
}

struct ProducerIdBlock {
    next: i64,
    end: i64,
}

impl Broker {
    /// Opens the data directories (recovering every partition) and the broker identity.
    pub fn open(
        config: BrokerConfig,
        endpoints: std::collections::BTreeMap<String, (String, u16)>,
    ) -> Result<Self, BrokerError> {
        Self::open_with_clock(config, endpoints, Arc::new(runnel_core::SystemClock))
    }

    /// [`Broker::open`] with the clock the coordinators and the ISR check read.
    pub fn open_with_clock(
        config: BrokerConfig,
        endpoints: std::collections::BTreeMap<String, (String, u16)>,
        clock: Arc<dyn runnel_core::Clock>,
    ) -> Result<Self, BrokerError> {
        // Before any partition opens: every partition and connection holds descriptors.
        let fd_limit = crate::fds::raise_limit();
        let connections = crate::server::connections::Connections::new(&config.limits, fd_limit);
        let config = Arc::new(config);
        let (advertised_host, advertised_port) = endpoints
            .get(&config.listeners.inter_broker)
            .cloned()
            .unwrap_or_else(|| ("127.0.0.1".to_string(), 0));
        let mut dir_locks = Vec::with_capacity(config.log_dirs.len());
        for dir in &config.log_dirs {
            std::fs::create_dir_all(dir).map_err(|e| BrokerError::storage(dir, e))?;
            dir_locks.push(runnel_log::DirLock::acquire(dir).map_err(BrokerError::from)?);
        }
        let cluster_id = load_or_create_identity(&config)?;
        let topics = TopicRegistry::open(config.clone())?;
        let config_txn = config.txn.clone();
        let authz = crate::authz::Authz::open(config.authz.clone());
        let quotas = crate::server::quota::Quotas::open(config.quota.clone());
        let groups = GroupCoordinator::with_clock(config.groups.clone(), clock.clone());
        // Restored by reconcile once the first image opened the partitions.
        let shares = crate::coordinators::share::Shares::new(config.share.clone());
        let security = crate::server::security::Security::build(&config)
            .map_err(|e| BrokerError::new(crate::error::ErrorCode::InvalidConfig, e))?;
        let links = crate::mirror::Links::default();
        let broker = Broker {
            config,
            topics,
            cluster_id,
            advertised_host,
            advertised_port: advertised_port as i32,
            endpoints,
            producer_ids: Mutex::new(ProducerIdBlock { next: 0, end: 0 }),
            fetch_sessions: FetchSessions::default(),
            groups,
            shares,
            creating_internal: Default::default(),
            txns: TxnCoordinator::with_clock(config_txn, clock.clone()),
            metrics: Default::default(),
            cluster: std::sync::OnceLock::new(),
            _dir_locks: dir_locks,
            connections,
            authz,
            quotas,
            security,
            links,
            clock,
        };
        Ok(broker)
    }

    /// The link to the metadata quorum (every node has one: a single node is its own
    /// one-voter quorum). Set by `Cluster::start` before any task or request uses it.
    pub fn cluster(&self) -> &Arc<crate::cluster::Cluster> {
        self.cluster
            .get()
            .expect("Cluster::start sets the quorum link before the broker serves")
    }

    /// `min.insync.replicas` with dynamic broker configs applied.
    pub fn effective_min_isr(&self) -> usize {
        self.topics.effective_config().min_insync_replicas.max(1) as usize
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// This broker's advertised (host, port) on `listener` (the inter-broker endpoint
    /// for a listener it does not have).
    pub fn endpoint(&self, listener: &str) -> (&str, i32) {
        self.endpoints.get(listener).map_or(
            (self.advertised_host.as_str(), self.advertised_port),
            |(h, p)| (h.as_str(), i32::from(*p)),
        )
    }

    /// Every broker listener's endpoint, for the broker's registration.
    pub fn registered_endpoints(&self) -> Vec<runnel_meta::BrokerEndpoint> {
        self.endpoints
            .iter()
            .map(|(name, (host, port))| runnel_meta::BrokerEndpoint {
                name: name.clone(),
                host: host.clone(),
                port: i32::from(*port),
            })
            .collect()
    }

    /// Wakes every parked fetch (a new metadata image may have changed any partition's
    /// role; the fetches re-check and answer with the news).
    pub fn wake_all_fetches(&self) {
        for t in self.topics.all() {
            for p in &t.partitions {
                p.wake();
            }
        }
    }

    /// Appends to `p` as its leader (see `Partition::append_as_leader`, which refuses a
    /// partition on a failed log dir and takes the dir offline on an I/O error).
    pub fn append_as_leader<T>(
        &self,
        p: &crate::storage::partition::Partition,
        write: impl FnOnce(&mut runnel_log::PartitionLog, i32) -> Result<T, runnel_log::LogError>,
    ) -> Result<T, BrokerError> {
        // Also refused by the partition's own flag; this covers a partition created
        // before the flag was set on it.
        if let Some(link) = self.links.mirror_link_of(&p.topic) {
            return Err(crate::mirror::read_only_error(&link));
        }
        Ok(p.append_as_leader(write)?)
    }

    /// Appends one transaction marker to a partition this broker leads (and, on
    /// `__consumer_offsets`, applies or drops the transaction's offset commits); returns what
    /// to wait on (up to the marker, in this leader's epoch) for it to be acknowledged.
    pub fn append_marker(
        &self,
        part: &crate::storage::partition::Partition,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<crate::storage::partition::Appended, crate::error::BrokerError> {
        let written = self.append_as_leader(part, |log, epoch| {
            log.append_marker(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                epoch,
                runnel_core::clock::now_ms(),
            )
            .map(|offset| crate::storage::partition::Appended {
                end: offset + 1,
                leader_epoch: epoch,
            })
        })?;
        if part.topic == crate::coordinators::groups::OFFSETS_TOPIC {
            self.groups.complete_txn_offsets(producer_id, commit);
        }
        Ok(written)
    }

    /// (topic, partition) of every local partition that is offline here.
    pub fn offline_partitions(&self) -> std::collections::BTreeSet<(String, i32)> {
        let any_dir_down = self.topics.log_dirs.any_offline();
        self.topics
            .all()
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.storage_offline || (any_dir_down && p.is_offline()))
            .map(|p| (p.topic.clone(), p.index))
            .collect()
    }

    /// Log dirs currently offline.
    pub fn offline_dirs(&self) -> Vec<std::path::PathBuf> {
        self.topics.log_dirs.offline()
    }

    /// A producer id never issued before by this broker.
    pub fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        let mut block = self.producer_ids.lock();
        if block.next >= block.end {
            let path = self.config.log_dirs[0]
                .join("__cluster_metadata")
                .join("producer-ids");
            let start = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0);
            let end = start + PRODUCER_ID_BLOCK;
            write_file_atomically(&path, end.to_string().as_bytes())?;
            *block = ProducerIdBlock { next: start, end };
        }
        let id = block.next;
        block.next += 1;
        // Every broker hands out ids: the low bits name the broker, so two brokers never
        // issue the same id (node ids are below 1024, as checked at start). Ids an older
        // single node issued unshifted are all below the persisted block end, so below
        // every id issued now.
        Ok((id << 10) | i64::from(self.node_id() & 0x3ff))
    }
}

/// Reads `meta.properties` from each log dir (Kafka's file: cluster.id, node.id), writing
/// it on first start. A dir that belongs to another cluster or node refuses to start.
fn load_or_create_identity(config: &BrokerConfig) -> Result<String, BrokerError> {
    let mut cluster_id: Option<String> = None;
    for dir in &config.log_dirs {
        let path = dir.join("meta.properties");
        if let Ok(pairs) = BrokerConfig::read_properties(&path) {
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            if let Some(node) = get("node.id") {
                if node != config.node_id.to_string() {
                    return Err(BrokerError::new(
                        crate::error::ErrorCode::KafkaStorageError,
                        format!(
                            "{} belongs to node.id {node}, but this broker is node.id {}",
                            path.display(),
                            config.node_id
                        ),
                    ));
                }
            }
            if let (Some(found), Some(known)) = (get("cluster.id"), cluster_id.as_ref()) {
                if &found != known {
                    return Err(BrokerError::new(
                        crate::error::ErrorCode::KafkaStorageError,
                        format!(
                            "{} belongs to cluster {found}, other log dirs to {known}",
                            path.display()
                        ),
                    ));
                }
            }
            cluster_id = cluster_id.or(get("cluster.id"));
        }
    }
    let cluster_id = cluster_id.unwrap_or_else(runnel_core::names::new_cluster_id);
    for dir in &config.log_dirs {
        let path = dir.join("meta.properties");
        if !path.exists() {
            let text = format!(
                "version=1\ncluster.id={cluster_id}\nnode.id={}\n",
                config.node_id
            );
            write_file_atomically(&path, text.as_bytes())?;
        }
    }
    Ok(cluster_id)
}

impl crate::coordinators::Host for Broker {
    fn topics(&self) -> &TopicRegistry {
        &self.topics
    }

    fn append_as_leader<T>(
        &self,
        p: &crate::storage::partition::Partition,
        write: impl FnOnce(&mut runnel_log::PartitionLog, i32) -> Result<T, runnel_log::LogError>,
    ) -> Result<T, BrokerError> {
        Broker::append_as_leader(self, p, write)
    }

    fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        Broker::allocate_producer_id(self)
    }

    fn send_txn_markers(
        &self,
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<(String, i32)>,
    ) {
        self.cluster()
            .send_markers(transactional_id, producer_id, epoch, commit, partitions);
    }

    fn offsets_topic_partitions(&self) -> i32 {
        self.groups.config.offsets_topic_partitions
    }

    fn shares(&self) -> &crate::coordinators::share::Shares {
        &self.shares
    }

    fn ensure_internal_topic(&self, mut topic: runnel_meta::NewTopic) {
        let cluster = self.cluster().clone();
        let image = cluster.current_image();
        if image.topics.contains_key(&topic.name)
            || !self.creating_internal.lock().insert(topic.name.clone())
        {
            return;
        }
        let live = image.live_brokers().count() as i16;
        topic.replication_factor = topic.replication_factor.min(live.max(1));
        let name = topic.name.clone();
        let creating = self.creating_internal.clone();
        tokio::spawn(async move {
            let created = cluster.controller.create_topics(vec![topic], false).await;
            if let Some(Err(e)) = created.into_iter().next() {
                if e.kind != runnel_meta::ErrorKind::TopicAlreadyExists {
                    tracing::warn!(topic = %name, error = %e.message, "could not create an internal topic; asked again when next needed");
                }
            }
            creating.lock().remove(&name);
        });
    }
}
