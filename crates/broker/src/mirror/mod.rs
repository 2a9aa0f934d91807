//! Cluster links and mirror topics: offset-preserving mirroring from another
//! Kafka-protocol cluster (the "source") into this one (the "target"), as Confluent
//! Cluster Linking does. `docs/mirroring.md` is the user's guide.
//!
//! - `store.rs`: link definitions and each mirror topic's state, persisted like group
//!   configs: the metadata log's cluster-wide config records (keys `link:<name>` and
//!   `link-topic:<name>:<topic>`), so a link survives restarts and every broker sees it.
//! - `puller.rs`: one task per mirror partition this broker leads, started and stopped
//!   with leadership; it fetches from the source partition's leader with `runnel-client`
//!   and writes every batch at the source's offset through `Partition::append_as_mirror`.
//! - `manager.rs`: on one broker (single node: itself; cluster: the active controller)
//!   polls the source's metadata, creates mirror topics and their new partitions, syncs
//!   topic configs and consumer-group offsets.
//! - `admin.rs`: the links admin API, carried by DescribeConfigs and
//!   IncrementalAlterConfigs on a Runnel-specific config resource type (so it works in
//!   both modes through any broker, and the CLI needs only `-b`), and its JSON for HTTP.
//!
//! Thread-safe: `Links` keeps its state behind short-held locks.

pub mod admin;
mod manager;
mod puller;
pub(crate) mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::broker::Broker;
use crate::error::BrokerError;
pub use store::{LinkDef, MirrorState};

/// The config resource type of a cluster link (DescribeConfigs, IncrementalAlterConfigs).
/// Kafka's types are 0..32 (powers of two); Kafka answers INVALID_REQUEST for this one.
pub const RESOURCE_CLUSTER_LINK: i8 = 101;

/// How often each broker checks which mirror partitions it leads.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);

pub use crate::storage::partition::read_only_error;

/// One mirror partition's progress, as the broker leading it sees it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PartitionStatus {
    pub link: String,
    /// MIRRORING, SOURCE_UNAVAILABLE, STOPPED.
    pub state: &'static str,
    /// This partition's log end: every offset below it is copied.
    pub mirrored_offset: i64,
    /// The source partition's high watermark at the last fetch (-1 unknown).
    pub source_end: i64,
    pub source_start: i64,
    pub error: Option<String>,
    pub bytes: u64,
}

impl PartitionStatus {
    pub fn lag(&self) -> i64 {
        if self.source_end < 0 {
            -1
        } else {
            (self.source_end - self.mirrored_offset).max(0)
        }
    }
}

/// A link's state on the broker managing it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LinkStatus {
    /// ACTIVE, SOURCE_UNAVAILABLE.
    pub state: &'static str,
    pub error: Option<String>,
    /// Source topics matching the filter that cannot be mirrored (a local topic with
    /// the same name that is not a mirror of this link).
    pub collisions: Vec<String>,
    /// Mirror topics the source no longer has (deleted there); kept here as they are.
    pub source_missing: Vec<String>,
    /// Groups whose offsets were not synced because they are active on this cluster.
    pub groups_skipped_active: Vec<String>,
    pub groups_synced: u64,
    /// acl.sync: the ACLs this link created here that are in force.
    pub acls_synced: u64,
    /// acl.sync: why the last ACL sync failed (None when it worked or is off).
    pub acl_sync_error: Option<String>,
}

/// A link's source client and the link configs it was made with.
type SourceClient = (BTreeMap<String, String>, runnel_client::Client);

/// A link's parsed configs and the configs they were parsed from.
type ParsedSettings = (BTreeMap<String, String>, Arc<store::Settings>);

/// One Prometheus family of per-partition samples: name, type, help, and the extra
/// labels and value of a partition's sample.
type PartitionFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PartitionStatus) -> (String, String),
);

/// All links, their mirror topics, and this broker's mirroring tasks.
#[derive(Default)]
pub struct Links {
    store: store::LinkStore,
    partitions: Mutex<BTreeMap<(String, i32), PartitionStatus>>,
    links: Mutex<BTreeMap<String, LinkStatus>>,
    tasks: Mutex<HashMap<(String, i32), tokio::task::JoinHandle<()>>>,
    /// Source clients by link name, with the configs they were made with.
    clients: tokio::sync::Mutex<HashMap<String, SourceClient>>,
    /// Parsed configs by link name, with the configs they were parsed from.
    settings: Mutex<HashMap<String, ParsedSettings>>,
}

impl Links {
    /// In a cluster: takes the links from the metadata image's cluster-wide configs, and
    /// makes local partitions of topics no longer mirrored writable at once.
    pub fn apply_image(&self, broker: &Broker, image_configs: &BTreeMap<String, String>) {
        self.store.apply_image(image_configs);
        self.mark_partitions(broker);
    }

    pub fn get(&self, name: &str) -> Option<LinkDef> {
        self.store.get(name)
    }

    pub fn all(&self) -> Vec<LinkDef> {
        self.store.all()
    }

    /// The link mirroring `topic`, while the topic is a (not promoted) mirror.
    pub fn mirror_link_of(&self, topic: &str) -> Option<String> {
        self.store.active_link_of(topic)
    }

    pub fn partition_status(&self, topic: &str, partition: i32) -> Option<PartitionStatus> {
        self.partitions
            .lock()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub fn partition_statuses(&self) -> Vec<((String, i32), PartitionStatus)> {
        self.partitions
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn link_status(&self, name: &str) -> Option<LinkStatus> {
        self.links.lock().get(name).cloned()
    }

    /// Sets each local partition's mirror flag from the store: the link's name while
    /// its topic is an active mirror, None otherwise (an ordinary or promoted topic).
    pub fn mark_partitions(&self, broker: &Broker) {
        for t in broker.topics.all() {
            let link = self.mirror_link_of(&t.name).map(Arc::<str>::from);
            for p in &t.partitions {
                if p.mirror_of().as_deref() != link.as_deref() {
                    p.set_mirror_of(link.clone());
                }
            }
        }
    }

    /// A link's parsed configs, kept while they stay the same (TLS setup reads files
    /// and parses certificates: once per change, not once per fetch).
    fn settings(&self, def: &LinkDef) -> Result<Arc<store::Settings>, BrokerError> {
        let mut cache = self.settings.lock();
        if let Some((configs, s)) = cache.get(&def.name) {
            if *configs == def.configs {
                return Ok(s.clone());
            }
        }
        let s = Arc::new(store::Settings::parse(&def.configs)?);
        cache.insert(def.name.clone(), (def.configs.clone(), s.clone()));
        Ok(s)
    }

    /// A client for `link`'s source cluster (kept while the link's configs stay the same).
    async fn source_client(&self, link: &LinkDef) -> Result<runnel_client::Client, String> {
        let mut clients = self.clients.lock().await;
        if let Some((configs, c)) = clients.get(&link.name) {
            if *configs == link.configs {
                return Ok(c.clone());
            }
        }
        let settings = self.settings(link).map_err(|e| e.message)?;
        let client = runnel_client::Client::connect(&settings.bootstrap, settings.client_config())
            .await
            .map_err(|e| e.to_string())?;
        clients.insert(link.name.clone(), (link.configs.clone(), client.clone()));
        Ok(client)
    }

    /// Forgets a link's source client (after a failure: the next use reconnects).
    async fn drop_client(&self, link: &str) {
        self.clients.lock().await.remove(link);
    }
}

/// Runs the mirroring of this broker until aborted: the pullers of the mirror partitions
/// it leads and, on the managing broker, each link's metadata, config and offset sync.
pub async fn run(broker: Arc<Broker>) {
    let manager = tokio::spawn(manager::run(broker.clone()));
    let _stop_manager = AbortOnDrop(manager);
    loop {
        supervise(&broker);
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts a puller for each mirror partition this broker leads that has none; pullers
/// stop themselves when leadership, the link or the topic's mirror state goes away.
fn supervise(broker: &Arc<Broker>) {
    let links = &broker.links;
    links.mark_partitions(broker);
    let mut tasks = links.tasks.lock();
    tasks.retain(|_, t| !t.is_finished());
    for t in broker.topics.all() {
        let Some(link) = links.mirror_link_of(&t.name) else {
            continue;
        };
        for p in &t.partitions {
            let key = (t.name.clone(), p.index);
            if tasks.contains_key(&key) {
                continue;
            }
            // The replica lock is released before `is_offline`, which may take the log
            // lock (the lock order is log, then replica).
            let leads = p.replica.lock().is_leader();
            if !leads || p.is_offline() {
                continue;
            }
            let handle = tokio::spawn(puller::run(broker.clone(), link.clone(), p.clone()));
            tasks.insert(key, handle);
        }
    }
    // Statuses of partitions no longer mirrored here (promoted, moved) go.
    let running: Vec<(String, i32)> = tasks.keys().cloned().collect();
    drop(tasks);
    links.partitions.lock().retain(|k, _| running.contains(k));
}

/// Stops every puller (shutdown).
pub fn stop_all(broker: &Broker) {
    for (_, t) in broker.links.tasks.lock().drain() {
        t.abort();
    }
}

/// Prometheus text for the mirror partitions this broker leads and the links it manages.
pub fn prometheus_text(broker: &Broker) -> String {
    use std::fmt::Write;
    let esc = crate::http::prometheus::escape_label;
    let mut out = String::new();
    let parts = broker.links.partition_statuses();
    let families: [PartitionFamily; 3] = [
        (
            "runnel_link_mirror_partition_lag",
            "gauge",
            "Source high watermark minus mirrored offset, per mirror partition this broker leads.",
            |s| (String::new(), s.lag().to_string()),
        ),
        (
            "runnel_link_mirror_partition_state",
            "gauge",
            "1 for the state a mirror partition is in (MIRRORING, SOURCE_UNAVAILABLE, STOPPED).",
            |s| (format!(",state=\"{}\"", s.state), "1".into()),
        ),
        (
            "runnel_link_mirror_bytes_total",
            "counter",
            "Record bytes mirrored, per mirror partition this broker leads.",
            |s| (String::new(), s.bytes.to_string()),
        ),
    ];
    for (name, kind, help, sample) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((t, p), s) in &parts {
            let (extra, value) = sample(s);
            let _ = writeln!(
                out,
                "{name}{{link=\"{}\",topic=\"{}\",partition=\"{p}\"{extra}}} {value}",
                esc(&s.link),
                esc(t),
            );
        }
    }
    let _ = writeln!(out, "# HELP runnel_link_source_available 1 while the managing broker reaches the link's source, 0 while it cannot.\n# TYPE runnel_link_source_available gauge");
    for (name, s) in broker.links.links.lock().iter() {
        let _ = writeln!(
            out,
            "runnel_link_source_available{{link=\"{}\"}} {}",
            esc(name),
            u8::from(s.state == "ACTIVE")
        );
    }
    let _ = writeln!(out, "# HELP runnel_link_acls_synced ACLs the link created here from its source (acl.sync.enable) that are in force.\n# TYPE runnel_link_acls_synced gauge");
    for (name, s) in broker.links.links.lock().iter() {
        let _ = writeln!(
            out,
            "runnel_link_acls_synced{{link=\"{}\"}} {}",
            esc(name),
            s.acls_synced
        );
    }
    out
}

/// Logs a state change once (not once per attempt): returns true if `state` is new.
fn changed(previous: &mut &'static str, state: &'static str) -> bool {
    let changed = *previous != state;
    *previous = state;
    changed
}

/// Exponential backoff from 100 ms up to `max`.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.min(16));
    Duration::from_millis(ms).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(0, max), Duration::from_millis(100));
        assert_eq!(backoff(3, max), Duration::from_millis(800));
        assert_eq!(backoff(30, max), max);
    }

    #[test]
    fn lag_is_never_negative() {
        let mut s = PartitionStatus {
            source_end: -1,
            ..Default::default()
        };
        assert_eq!(s.lag(), -1);
        s.source_end = 10;
        s.mirrored_offset = 4;
        assert_eq!(s.lag(), 6);
        s.mirrored_offset = 12;
        assert_eq!(s.lag(), 0);
    }
}
