//! The topics this broker holds: names, ids, partitions, configs. Their durable record
//! is the metadata log (`crates/meta`): `cluster::reconcile` makes this registry match
//! each image, so the registry starts empty and holds only what an image named.
//!
//! Thread-safe: the registry is behind a RwLock; creation and deletion serialise on the
//! write lock, so two clients creating the same topic get one topic and one error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use runnel_log::PartitionLog;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{topic_log_config, validate_topic_config, BrokerConfig};
use crate::error::{BrokerError, ErrorCode};
use crate::storage::partition::Partition;
use runnel_core::clock::now_ms;

pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    pub configs: BTreeMap<String, String>,
}

/// A topic as the previous single-node layout recorded it in `topics.json` (read once,
/// by the import into the metadata log).
#[derive(Serialize, Deserialize, Clone)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct MetadataFile {
    pub topics: Vec<TopicRecord>,
}

pub struct TopicRegistry {
    config: Arc<BrokerConfig>,
    /// Dynamic broker configs (AlterConfigs on the broker), persisted in
    /// `broker-configs.json` (per broker, as in Kafka).
    dynamic: RwLock<BTreeMap<String, String>>,
    /// `config` with `dynamic` applied: the defaults new and existing topics use.
    effective: RwLock<Arc<BrokerConfig>>,
    dynamic_path: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises the creators of topics and partitions (CreateTopics, CreatePartitions,
    /// the coordinators, the metadata image). Partition logs are opened under this lock
    /// only; `topics` is write-locked just to insert the result, so producers, fetches and
    /// metadata requests never wait for a creation.
    creating: parking_lot::Mutex<()>,
    /// The failed log dirs, shared with every partition.
    pub log_dirs: Arc<crate::storage::log_dirs::LogDirs>,
}

/// The topics the broker writes itself (Kafka's `Topic.isInternal`): clients may not
/// produce to, create or delete them.
pub const INTERNAL_TOPICS: &[&str] = &[OFFSETS_TOPIC, TXN_TOPIC, SHARE_STATE_TOPIC];

/// The group coordinator's topic (`coordinators::groups`).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The transaction coordinator's topic (`coordinators::txn`).
pub const TXN_TOPIC: &str = "__transaction_state";
/// The share coordinator's topic (`coordinators::share`).
pub const SHARE_STATE_TOPIC: &str = "__share_group_state";

/// The KRaft metadata log's name: never a topic a client may create (Kafka's
/// ControllerApis refuses it with INVALID_REQUEST).
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

pub fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// Whether a client's CreateTopics may use this name: refuses internal and reserved
/// names; the rest of Kafka's rules are `validate_topic_name`'s.
pub fn check_client_creatable(name: &str, exists: bool) -> Result<(), BrokerError> {
    if name == CLUSTER_METADATA_TOPIC {
        return Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{CLUSTER_METADATA_TOPIC} is the metadata log, not a topic that can be created"
            ),
        ));
    }
    if is_internal(name) {
        return Err(if exists {
            BrokerError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            )
        } else {
            BrokerError::new(
                ErrorCode::InvalidTopic,
                format!(
                    "'{name}' is an internal topic: the broker creates it when it is first needed"
                ),
            )
        });
    }
    Ok(())
}

/// Kafka's rules (`runnel_core::names::topic_name_error`), as INVALID_TOPIC_EXCEPTION.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    match runnel_core::names::topic_name_error(name) {
        Some(why) => Err(BrokerError::new(ErrorCode::InvalidTopic, why)),
        None => Ok(()),
    }
}

fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Chooses partition directories: an existing one in any log dir, or a new one in the
/// log dir holding the fewest partitions. Each log dir is listed once, when the placer
/// is made, and the counts are kept as it places, so placing n partitions is O(n).
/// A partition's directory is made by its first write (`PartitionLog::open`), so the
/// partitions placed but not written yet (`unmade`, per log dir) count as well.
struct Placer<'a> {
    dirs: &'a [PathBuf],
    load: Vec<usize>,
}

impl<'a> Placer<'a> {
    fn new(dirs: &'a [PathBuf], unmade: &[usize]) -> Self {
        let load = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let on_disk = std::fs::read_dir(d).map_or(0, |it| {
                    it.filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .count()
                });
                on_disk + unmade.get(i).copied().unwrap_or(0)
            })
            .collect();
        Placer { dirs, load }
    }

    fn place(&mut self, topic: &str, partition: i32) -> PathBuf {
        let name = partition_dir_name(topic, partition);
        if let Some(existing) = self.dirs.iter().map(|d| d.join(&name)).find(|p| p.is_dir()) {
            return existing;
        }
        let (i, _) = self
            .load
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .expect("log.dirs is never empty");
        self.load[i] += 1;
        self.dirs[i].join(name)
    }
}

impl TopicRegistry {
    /// Loads the topic records and opens (recovering) every partition log.
    pub fn open(config: Arc<BrokerConfig>) -> Result<Self, BrokerError> {
        let meta_dir = config.log_dirs[0].join("__cluster_metadata");
        std::fs::create_dir_all(&meta_dir).map_err(|e| BrokerError::storage(&meta_dir, e))?;
        let dynamic_path = meta_dir.join("broker-configs.json");
        let dynamic: BTreeMap<String, String> = match std::fs::read(&dynamic_path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                BrokerError::new(
                    ErrorCode::KafkaStorageError,
                    format!("{} is damaged: {e}", dynamic_path.display()),
                )
            })?,
            Err(_) => BTreeMap::new(),
        };
        let effective = config.with_dynamic(&dynamic).map_err(|e| {
            BrokerError::new(
                ErrorCode::InvalidConfig,
                format!("{}: {e}", dynamic_path.display()),
            )
        })?;
        let registry = TopicRegistry {
            config,
            dynamic: RwLock::new(dynamic),
            effective: RwLock::new(Arc::new(effective)),
            dynamic_path,
            topics: RwLock::new(BTreeMap::new()),
            creating: parking_lot::Mutex::new(()),
            log_dirs: Default::default(),
        };
        Ok(registry)
    }

    /// Opens partitions `range` of a topic. With `fresh` (a creation, not a start-up),
    /// a failure stops and closes the partitions this call opened and removes their
    /// directories, so a refused creation leaves no descriptors, tasks or files behind.
    /// Linear in the number of partitions: the log dirs are listed once, not per partition.
    fn open_partitions(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
        range: std::ops::Range<i32>,
        fresh: bool,
    ) -> Result<Vec<Arc<Partition>>, BrokerError> {
        let log_config = topic_log_config(&self.effective_config().log_defaults, configs);
        let mut placer = Placer::new(&self.config.log_dirs, &self.unmade_per_log_dir());
        let mut opened: Vec<Arc<Partition>> = Vec::with_capacity(range.len());
        // The partitions whose directory this call made: only those are removed on a
        // failure (a topic of the metadata image may find its data already on disk).
        let mut created: Vec<Arc<Partition>> = Vec::new();
        for p in range {
            let dir = placer.place(topic, p);
            let existed = dir.is_dir();
            let log = match PartitionLog::open(&dir, log_config.clone(), now_ms()) {
                Ok(log) => log,
                Err(e) => {
                    if fresh {
                        tracing::warn!(topic, partition = p, error = %e, "could not create a partition; undoing the creation");
                        for p in &opened {
                            p.shutdown();
                        }
                        Self::discard(&created);
                        if !existed {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                    }
                    return Err(BrokerError::from(e));
                }
            };
            let partition = Partition::new(topic, p, log, self.log_dirs.clone());
            if !existed {
                created.push(partition.clone());
            }
            opened.push(partition);
        }
        Ok(opened)
    }

    /// How many partitions each log dir holds that were never written (so have no
    /// directory yet). Only counted with more than one log dir, where it decides placement.
    fn unmade_per_log_dir(&self) -> Vec<usize> {
        let dirs = &self.config.log_dirs;
        let mut unmade = vec![0; dirs.len()];
        if dirs.len() < 2 {
            return unmade;
        }
        // The registry lock is released before any partition's log lock is taken.
        for t in self.all() {
            for p in &t.partitions {
                let log = p.log.lock();
                if log.on_disk() || log.offline_reason().is_some() {
                    continue;
                }
                if let Some(i) = dirs
                    .iter()
                    .position(|d| Some(d.as_path()) == log.dir().parent())
                {
                    unmade[i] += 1;
                }
            }
        }
        unmade
    }

    /// Stops partitions that were never published and removes their directories (a
    /// partition never written has none).
    fn discard(partitions: &[Arc<Partition>]) {
        for p in partitions {
            p.shutdown();
            let dir = p.log.lock().dir().to_path_buf();
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove the directory of a removed partition");
                }
                _ => {}
            }
        }
    }

    /// Refuses a creation that would take more than `max.partitions.per.request`
    /// partitions, push the broker past `max.partitions.per.broker`, or need more file
    /// descriptors than the process may still open.
    pub fn check_partition_budget(&self, adding: usize) -> Result<(), BrokerError> {
        let limits = &self.config.limits;
        if adding > limits.max_partitions_per_request {
            return Err(BrokerError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "{adding} new partitions exceed max.partitions.per.request ({})",
                    limits.max_partitions_per_request
                ),
            ));
        }
        let held: usize = self
            .topics
            .read()
            .values()
            .map(|t| t.partitions.len())
            .sum();
        if held + adding > limits.max_partitions_per_broker {
            return Err(BrokerError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "this broker holds {held} partitions; {adding} more would exceed max.partitions.per.broker ({})",
                    limits.max_partitions_per_broker
                ),
            ));
        }
        if let Some((open, limit)) = crate::fds::usage() {
            let needed = adding * crate::fds::PER_PARTITION;
            if open + needed + crate::fds::reserve(limit) > limit {
                return Err(BrokerError::new(
                    ErrorCode::PolicyViolation,
                    format!(
                        "{adding} new partitions need about {needed} file descriptors; {open} of the process's limit of {limit} are open (raise the open-file limit, ulimit -n)"
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let t = self.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i).cloned())
    }

    /// Creates a topic. Validates the name, counts and configs first; with
    /// `validate_only`, stops there.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        if partitions < 1 {
            return Err(BrokerError::new(
                ErrorCode::InvalidPartitions,
                format!("number of partitions must be at least 1, got {partitions}"),
            ));
        }
        for (k, v) in &configs {
            validate_topic_config(k, v)
                .map_err(|e| BrokerError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        }
        let _creating = self.creating.lock();
        let topics = self.topics.read();
        if topics.contains_key(name) {
            return Err(BrokerError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        // Kafka refuses names that differ only by '.' versus '_': metric names collide.
        let canonical = name.replace('.', "_");
        if let Some(other) = topics.keys().find(|t| t.replace('.', "_") == canonical) {
            return Err(BrokerError::new(
                ErrorCode::InvalidTopic,
                format!("topic '{name}' collides with existing topic '{other}'"),
            ));
        }
        drop(topics);
        self.check_partition_budget(partitions as usize)?;
        let rec = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        if validate_only {
            return Ok(Arc::new(Topic {
                name: rec.name,
                id: rec.id,
                partitions: Vec::new(),
                configs: rec.configs,
            }));
        }
        let topic = self.add_topic(&rec)?;
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Replaces a topic's configs (validated by the caller) and applies them to its
    /// partitions at once.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let mut topics = self.topics.write();
        let old = topics.get(name).cloned().ok_or_else(|| {
            BrokerError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })?;
        let updated = Arc::new(Topic {
            name: old.name.clone(),
            id: old.id,
            partitions: old.partitions.clone(),
            configs,
        });
        topics.insert(name.to_string(), updated.clone());
        let log_config = topic_log_config(&self.effective_config().log_defaults, &updated.configs);
        for p in &updated.partitions {
            p.log.lock().set_config(log_config.clone());
        }
        tracing::info!(topic = name, "topic configs changed");
        Ok(())
    }

    /// Grows a topic to `count` partitions (CreatePartitions); never shrinks.
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _creating = self.creating.lock();
        let old = self.get(name).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })?;
        let current = old.partitions.len() as i32;
        if count <= current {
            return Err(BrokerError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{name}' has {current} partitions; the new count {count} must be larger"
                ),
            ));
        }
        self.check_partition_budget((count - current) as usize)?;
        if validate_only {
            return Ok(());
        }
        let added = self.open_partitions(name, &old.configs, current..count, true)?;
        let mut topics = self.topics.write();
        // Configs may have changed while the logs opened (set_configs does not wait for
        // creators); keep the newest. A deletion meanwhile undoes the growth.
        let Some(now) = topics.get(name).cloned().filter(|t| t.id == old.id) else {
            drop(topics);
            Self::discard(&added);
            return Err(BrokerError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' was deleted while its partitions were added"),
            ));
        };
        let mut partitions = now.partitions.clone();
        partitions.extend(added.iter().cloned());
        topics.insert(
            name.to_string(),
            Arc::new(Topic {
                name: now.name.clone(),
                id: now.id,
                partitions,
                configs: now.configs.clone(),
            }),
        );
        if now.configs != old.configs {
            let log_config = topic_log_config(&self.effective_config().log_defaults, &now.configs);
            for p in &added {
                p.log.lock().set_config(log_config.clone());
            }
        }
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Moves a partition's log to another of the broker's log dirs (AlterReplicaLogDirs).
    /// The partition is closed, copied, reopened from the new place and the old copy
    /// removed, all under its lock: producers and consumers of that partition wait for the
    /// copy; the rest of the broker does not.
    pub fn move_partition(
        &self,
        topic: &str,
        partition: i32,
        target_dir: &Path,
    ) -> Result<(), BrokerError> {
        let target_dir = self
            .config
            .log_dirs
            .iter()
            .find(|d| d.as_path() == target_dir)
            .ok_or_else(|| {
                BrokerError::new(
                    ErrorCode::LogDirNotFound,
                    format!(
                        "{} is not one of this broker's log.dirs",
                        target_dir.display()
                    ),
                )
            })?
            .clone();
        let t = self.get(topic).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{topic}' does not exist"),
            )
        })?;
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
            .ok_or_else(|| {
                BrokerError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("{topic}-{partition} does not exist"),
                )
            })?;
        let mut log = p.log.lock();
        let from = log.dir().to_path_buf();
        if from.parent() == Some(target_dir.as_path()) {
            return Ok(());
        }
        let to = target_dir.join(partition_dir_name(topic, partition));
        if !log.on_disk() && log.offline_reason().is_none() {
            // Never written: nothing to copy; its directory will be made in the new place.
            *log = PartitionLog::open(&to, log.config().clone(), now_ms())
                .map_err(BrokerError::from)?;
            tracing::info!(topic, partition, to = %to.display(), "moved an empty partition to another log dir");
            return Ok(());
        }
        log.close().map_err(BrokerError::from)?;
        let copy = || -> std::io::Result<()> {
            let staging = to.with_extension("moving");
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging)?;
            for entry in std::fs::read_dir(&from)? {
                let entry = entry?;
                let dest = staging.join(entry.file_name());
                std::fs::copy(entry.path(), &dest)?;
                std::fs::File::open(&dest)?.sync_all()?;
            }
            std::fs::rename(&staging, &to)?;
            std::fs::File::open(&target_dir)?.sync_all()
        };
        if let Err(e) = copy() {
            // The original is intact (and closed cleanly): reopen it where it was.
            let reopened = PartitionLog::open(&from, log.config().clone(), now_ms())
                .map_err(BrokerError::from)?;
            *log = reopened;
            return Err(BrokerError::storage(&to, e));
        }
        let moved =
            PartitionLog::open(&to, log.config().clone(), now_ms()).map_err(BrokerError::from)?;
        *log = moved;
        if let Err(e) = std::fs::remove_dir_all(&from) {
            tracing::warn!(dir = %from.display(), error = %e, "moved partition, but could not remove the old copy");
        }
        tracing::info!(topic, partition, from = %from.display(), to = %to.display(), "moved partition to another log dir");
        Ok(())
    }

    /// The broker configuration in force: static keys with dynamic overrides.
    pub fn effective_config(&self) -> Arc<BrokerConfig> {
        self.effective.read().clone()
    }

    /// The dynamic broker configs that are set.
    pub fn dynamic_configs(&self) -> BTreeMap<String, String> {
        self.dynamic.read().clone()
    }

    /// Applies dynamic broker config changes (None deletes a key): validated together,
    /// persisted, then applied to every partition without a topic-level override.
    pub fn set_dynamic_configs(
        &self,
        changes: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let mut dynamic = self.dynamic.write();
        let mut next = dynamic.clone();
        for (k, v) in changes {
            match v {
                Some(v) => next.insert(k.clone(), v.clone()),
                None => next.remove(k),
            };
        }
        let effective = self
            .config
            .with_dynamic(&next)
            .map_err(|e| BrokerError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        if validate_only {
            return Ok(());
        }
        let raw = serde_json::to_vec_pretty(&next).expect("string map serialises");
        write_file_atomically(&self.dynamic_path, &raw)?;
        *dynamic = next;
        let effective = Arc::new(effective);
        *self.effective.write() = effective.clone();
        for topic in self.all() {
            let log_config = topic_log_config(&effective.log_defaults, &topic.configs);
            for p in &topic.partitions {
                p.log.lock().set_config(log_config.clone());
            }
        }
        tracing::info!(changes = ?changes, "dynamic broker configs changed");
        let ignored: Vec<&str> = changes
            .iter()
            .filter(|(k, v)| v.is_some() && crate::config::keys::is_stored_only(k))
            .map(|(k, _)| k.as_str())
            .collect();
        if !ignored.is_empty() {
            tracing::info!(keys = ?ignored, "stored dynamic broker configs that Runnel does not act on (Kafka accepts them)");
        }
        Ok(())
    }

    /// The broker's data directories.
    pub fn log_dirs(&self) -> &[PathBuf] {
        &self.config.log_dirs
    }

    /// Makes the local topic match the cluster's metadata image: created with the image's
    /// id, recreated if the id differs (deleted and created again meanwhile), grown to its
    /// partition count, given its configs. Returns the local topic.
    pub fn materialize(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.get(name) {
            if t.id != id {
                tracing::info!(topic = name, old = %t.id, new = %id, "topic was recreated in the cluster; dropping the local copy");
                self.delete(name)?;
            } else {
                if (t.partitions.len() as i32) < partitions {
                    self.add_partitions(name, partitions, false)?;
                }
                if &t.configs != configs {
                    self.set_configs(name, configs.clone())?;
                }
                return self.get(name).ok_or_else(|| {
                    BrokerError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' vanished"),
                    )
                });
            }
        }
        let rec = TopicRecord {
            name: name.to_string(),
            id,
            partitions,
            configs: configs.clone(),
        };
        let _creating = self.creating.lock();
        let topic = self.add_topic(&rec)?;
        tracing::info!(
            topic = name,
            partitions,
            "topic created from cluster metadata"
        );
        Ok(topic)
    }

    /// Opens a new topic's partitions (without holding the registry lock) and records
    /// it durably; on a failed write the topic is taken out again and its partition
    /// directories removed. The caller holds `creating`.
    fn add_topic(&self, rec: &TopicRecord) -> Result<Arc<Topic>, BrokerError> {
        let partitions = self.open_partitions(&rec.name, &rec.configs, 0..rec.partitions, true)?;
        let topic = Arc::new(Topic {
            name: rec.name.clone(),
            id: rec.id,
            partitions,
            configs: rec.configs.clone(),
        });
        self.topics.write().insert(rec.name.clone(), topic.clone());
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let topic = self.topics.write().remove(name).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })?;
        self.remove_partitions(&topic);
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    fn remove_partitions(&self, topic: &Topic) {
        Self::discard(&topic.partitions);
    }

    /// Applies retention to every partition of a topic whose cleanup.policy includes
    /// delete; returns the number of segments deleted.
    pub fn apply_retention(&self) -> usize {
        let mut deleted = 0;
        for topic in self
            .all()
            .into_iter()
            .filter(|t| crate::config::topic_deletes(&t.configs))
        {
            for p in &topic.partitions {
                match p.log.lock().apply_retention(now_ms()) {
                    Ok(n) => deleted += n,
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
        deleted
    }

    /// Compacts every partition of every compacted topic that is dirty enough.
    pub fn compact_all(&self) -> runnel_log::CompactionStats {
        let mut total = runnel_log::CompactionStats::default();
        for topic in self.all() {
            let Some(cfg) = crate::config::topic_compaction(&topic.configs) else {
                continue;
            };
            for p in &topic.partitions {
                match p
                    .log
                    .lock()
                    .compact(now_ms(), &cfg, &crate::storage::codec::KafkaCodecs)
                {
                    Ok(s) => {
                        total.segments_rewritten += s.segments_rewritten;
                        total.records_kept += s.records_kept;
                        total.records_removed += s.records_removed;
                        total.bytes_before += s.bytes_before;
                        total.bytes_after += s.bytes_after;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "compaction failed; the partition is left as it was")
                    }
                }
            }
        }
        total
    }

    /// fsyncs every partition (log.flush.interval.ms).
    pub fn flush_all(&self) {
        for topic in self.all() {
            for p in &topic.partitions {
                if let Err(e) = p.log.lock().flush() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Closes every partition cleanly (flush, producer snapshot, clean-shutdown marker).
    pub fn close_all(&self) {
        for topic in self.all() {
            for p in &topic.partitions {
                p.shutdown();
                if let Err(e) = p.log.lock().close() {
                    tracing::error!(topic = %topic.name, partition = p.index, error = %e, "close failed; the next start will recover this partition");
                }
            }
        }
    }
}

/// Reads a JSON file written by `write_file_atomically`; a missing file is the default
/// value, an unreadable or damaged one a KAFKA_STORAGE_ERROR naming the file.
pub fn read_json_file<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
) -> Result<T, BrokerError> {
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
            BrokerError::new(
                ErrorCode::KafkaStorageError,
                format!("{} is damaged: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(BrokerError::storage(path, e)),
    }
}

/// `runnel_core::fs::write_atomically` with the broker's error type.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), BrokerError> {
    runnel_core::fs::write_atomically(path, bytes).map_err(|e| BrokerError::storage(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        assert!(validate_topic_name("tweets").is_ok());
        assert!(validate_topic_name("a.b_c-D9").is_ok());
        for bad in ["", ".", "..", "has space", "ümlaut", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    /// A partition has no directory until its first write, yet it counts in the log dir
    /// it was placed in: four one-partition topics over two log dirs land two and two
    /// (counting directories alone would put all four in the emptier dir).
    #[tokio::test]
    async fn placement_counts_partitions_not_written_yet() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dirs = format!("{},{}", a.path().display(), b.path().display());
        let config = BrokerConfig::from_pairs(&[("log.dirs".to_string(), dirs)]).unwrap();
        let topics = TopicRegistry::open(Arc::new(config)).unwrap();
        let mut per_dir = [0, 0];
        for i in 0..4 {
            let t = topics
                .create(&format!("t{i}"), 1, BTreeMap::new(), false)
                .unwrap();
            let log = t.partitions[0].log.lock();
            assert!(!log.on_disk() && !log.dir().exists());
            per_dir[usize::from(log.dir().parent() == Some(b.path()))] += 1;
        }
        assert_eq!(per_dir, [2, 2]);
    }
}
