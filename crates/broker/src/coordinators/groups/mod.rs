//! The classic consumer-group coordinator (JoinGroup/SyncGroup/Heartbeat/LeaveGroup) and
//! committed offsets, following Kafka's GroupCoordinator state machine:
//!
//! ```text
//! Empty --join--> PreparingRebalance --all joined or rebalance timeout--> CompletingRebalance
//!   ^                    ^   |                                                  | leader's SyncGroup
//!   |                    |   +--(no members left)--> Empty                       v
//!   +--last member leaves/expires-- Stable <--------------------------------------+
//! ```
//!
//! Group metadata and offsets are written to the internal topic `__consumer_offsets` in
//! Kafka's record layouts and replayed at start-up, so groups survive restarts.
//!
//! Thread-safe: all group state is behind one mutex; waiting (a JoinGroup parked until
//! the rebalance completes) happens on oneshot channels outside it.

pub mod consumer;
pub mod group_configs;
pub mod records;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use runnel_core::{Clock, SystemClock};
use tokio::sync::oneshot;

use crate::error::{BrokerError, ErrorCode};
use crate::storage::partition::{Appended, Partition};
use crate::storage::topics::TopicRegistry;
use records::{GroupValue, MemberValue, OffsetValue, RecordKey};

pub use crate::storage::topics::OFFSETS_TOPIC;

/// Coordinator settings, from Kafka's `group.*` and `offsets.*` broker keys.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention_ms: i64,
    pub offsets_topic_partitions: i32,
    pub offset_metadata_max_bytes: usize,
    /// KIP-848 groups: `group.consumer.heartbeat.interval.ms` and `.session.timeout.ms`.
    pub consumer_heartbeat_interval_ms: i32,
    pub consumer_session_timeout_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_topic_partitions: 50,
            offset_metadata_max_bytes: 4096,
            consumer_heartbeat_interval_ms: 5000,
            consumer_session_timeout_ms: 45_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// (member id, group instance id, metadata): filled for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(error: ErrorCode, member_id: &str) -> Self {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ErrorCode) -> Self {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A result now, or a channel that delivers it when the group gets there.
pub enum Pending<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

pub struct JoinParams {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new dynamic member first gets its id with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_order: u64,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
    /// When the session ends without a heartbeat.
    fn session_deadline(&self) -> Instant {
        self.last_heartbeat + Duration::from_millis(self.session_timeout_ms.max(0) as u64)
    }
    /// Members waiting on a join or sync are alive by definition (Kafka's shouldKeepAlive);
    /// the others expire at their session deadline, as Kafka's heartbeat timer fires then.
    fn expired(&self, now: Instant) -> bool {
        self.join_waiter.is_none() && self.sync_waiter.is_none() && now >= self.session_deadline()
    }
}

pub struct Group {
    pub id: String,
    state: GroupState,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED and not yet used to join, with
    /// the deadline (the session timeout) after which an abandoned id stops blocking
    /// the join phase, as Kafka's pending-member expiration does.
    pending_members: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    offsets: HashMap<(String, i32), OffsetValue>,
    rebalance_deadline: Instant,
    join_not_before: Instant,
    next_join_order: u64,
}

impl Group {
    fn new(id: &str, now: Instant) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            offsets: HashMap::new(),
            rebalance_deadline: now,
            join_not_before: now,
            next_join_order: 0,
        }
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn max_rebalance_timeout(&self) -> Duration {
        Duration::from_millis(
            self.members
                .values()
                .map(|m| m.rebalance_timeout_ms.max(0) as u64)
                .max()
                .unwrap_or(0),
        )
    }

    /// The protocol every member supports that most members list first.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((vote, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                if let Some(entry) = votes.iter_mut().find(|(_, c)| *c == vote) {
                    entry.0 += 1;
                }
            }
        }
        // Highest vote wins; ties go to the earlier candidate.
        votes
            .iter()
            .rev()
            .max_by_key(|(n, _)| *n)
            .map(|(_, c)| (*c).clone())
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(p, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == p))
            })
    }

    fn to_value(&self, now_ms: i64) -> GroupValue {
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: now_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: self
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// A description of a group for DescribeGroups and the admin API.
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// What an offset commit answers when its write to `__consumer_offsets` failed with
/// `code`: Kafka's mapping (`GroupMetadataManager.storeOffsets`), so a client looks for
/// the coordinator again when this broker cannot write the group's partition any more.
fn commit_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::UnknownTopicOrPartition
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RequestTimedOut
        | ErrorCode::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
        ErrorCode::MessageTooLarge
        | ErrorCode::RecordListTooLarge
        | ErrorCode::InvalidFetchSize => ErrorCode::InvalidCommitOffsetSize,
        _ => ErrorCode::UnknownServerError,
    }
}

/// Where an offset commit was written, for the durability wait.
pub type CommitWait = Option<(Arc<Partition>, Appended)>;

pub struct GroupCoordinator {
    pub config: GroupConfig,
    /// Per-group config overrides (config resource GROUP).
    pub configs: group_configs::GroupConfigStore,
    groups: Mutex<HashMap<String, Group>>,
    /// KIP-848 groups. Lock order: `consumer_groups` before `groups`.
    consumer_groups: Mutex<HashMap<String, consumer::ConsumerGroup>>,
    /// Offsets committed inside open transactions, by producer id: visible only after
    /// the commit marker. Lock order: `pending_txn` before `groups`.
    pending_txn: Mutex<HashMap<i64, Vec<(String, (String, i32), OffsetValue)>>>,
    /// The `__consumer_offsets` partitions this broker leads, and so the groups it
    /// coordinates (with the topic's partition count).
    owned: parking_lot::RwLock<(std::collections::BTreeSet<i32>, i32)>,
    offline: OfflineCoordinatorPartitions,
    /// Subscription regexes compiled once per distinct pattern (at most
    /// `REGEX_CACHE_ENTRIES`; emptied when full), so a heartbeat never recompiles one.
    regexes: Mutex<HashMap<String, std::sync::Arc<regex_lite::Regex>>>,
    /// Session, rebalance, join and offset-expiry timers read this clock (tests move a
    /// `ManualClock`).
    clock: Arc<dyn Clock>,
}

const REGEX_CACHE_ENTRIES: usize = 1024;

impl GroupCoordinator {
    /// The compiled form of a KIP-848 subscription regex, or why it is refused. Compiled
    /// outside every coordinator lock.
    pub fn subscription_regex(
        &self,
        pattern: &str,
    ) -> Result<std::sync::Arc<regex_lite::Regex>, String> {
        if let Some(re) = self.regexes.lock().get(pattern) {
            return Ok(re.clone());
        }
        let re = std::sync::Arc::new(consumer::compile_regex(pattern)?);
        let mut cache = self.regexes.lock();
        if cache.len() >= REGEX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
        Ok(re)
    }

    pub fn new(config: GroupConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A coordinator whose timers read `clock`.
    pub fn with_clock(config: GroupConfig, clock: Arc<dyn Clock>) -> Self {
        GroupCoordinator {
            clock,
            // Coordinates nothing until it leads `__consumer_offsets` partitions.
            owned: parking_lot::RwLock::new((Default::default(), config.offsets_topic_partitions)),
            config,
            configs: Default::default(),
            groups: Mutex::new(HashMap::new()),
            consumer_groups: Mutex::new(HashMap::new()),
            pending_txn: Mutex::new(HashMap::new()),
            offline: OfflineCoordinatorPartitions::default(),
            regexes: Mutex::new(HashMap::new()),
        }
    }

    /// NOT_COORDINATOR unless this broker leads the group's `__consumer_offsets` partition.
    /// COORDINATOR_NOT_AVAILABLE when that partition's files failed recovery.
    pub fn check_coordinator(&self, group_id: &str) -> Result<(), ErrorCode> {
        if self.offline.holds(group_id) {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        let (owned, count) = &*self.owned.read();
        if owned.contains(&records::partition_for(group_id, *count)) {
            Ok(())
        } else {
            Err(ErrorCode::NotCoordinator)
        }
    }

    /// This broker became leader of `__consumer_offsets` partition `p` (load its groups
    /// from the log, which holds everything the ISR acknowledged), or stopped leading it
    /// (forget them; the new leader loads them).
    pub fn on_leadership(&self, p: &Partition, partitions: i32, leader: bool) {
        let index = p.index;
        {
            let mut owned = self.owned.write();
            let (set, count) = &mut *owned;
            *count = partitions;
            if leader {
                set.insert(index);
            } else {
                set.remove(&index);
            }
        }
        let mine = |g: &str| records::partition_for(g, partitions) == index;
        self.groups.lock().retain(|id, _| !mine(id));
        self.consumer_groups.lock().retain(|id, _| !mine(id));
        if leader {
            self.offline.note(p, partitions);
            match self.load_partition(p) {
                Ok(n) => tracing::info!(
                    partition = index,
                    groups = n,
                    "coordinating the groups of a __consumer_offsets partition"
                ),
                Err(e) => tracing::error!(partition = index, error = %e, "cannot load groups"),
            }
        } else {
            tracing::info!(
                partition = index,
                "no longer coordinating the groups of a __consumer_offsets partition"
            );
        }
    }

    /// Replays one `__consumer_offsets` partition into memory; returns the group count.
    fn load_partition(&self, p: &Partition) -> Result<usize, BrokerError> {
        let mut groups = self.groups.lock();
        if p.storage_offline {
            tracing::error!(topic = %p.topic, partition = p.index, "not replaying an offline partition: its groups answer COORDINATOR_NOT_AVAILABLE");
            return Ok(0);
        }
        // Transactional offset commits not yet decided by a marker, by producer id.
        let mut pending_txn: HashMap<i64, Vec<(Vec<u8>, Option<Vec<u8>>)>> = HashMap::new();
        p.log
            .lock()
            .for_each_batch(|h, batch| -> Result<(), BrokerError> {
                if h.is_control() {
                    // A transaction marker: its producer's pending offsets apply or go.
                    let pending = pending_txn.remove(&h.producer_id).unwrap_or_default();
                    if runnel_log::batch::marker_type(batch) == Some(true) {
                        for (k, v) in pending {
                            replay(&mut groups, Some(&k), v.as_deref(), self.clock.now());
                        }
                    }
                } else if h.is_transactional() {
                    let pending = pending_txn.entry(h.producer_id).or_default();
                    let read = runnel_log::batch::for_each_record(batch, |r| {
                        if let Some(k) = r.key {
                            pending.push((k.to_vec(), r.value.map(<[u8]>::to_vec)));
                        }
                    });
                    skip_unreadable(p, h, read);
                } else {
                    let read = runnel_log::batch::for_each_record(batch, |r| {
                        replay(&mut groups, r.key, r.value, self.clock.now())
                    });
                    skip_unreadable(p, h, read);
                }
                Ok(())
            })?;
        groups.retain(|_, g| !(g.members.is_empty() && g.offsets.is_empty() && g.generation == 0));
        Ok(groups.len())
    }

    /// Checks each offset to commit (metadata size, partition exists) and builds its
    /// `__consumer_offsets` record. Returns a code per offset, the records, and the
    /// accepted (partition, value) pairs.
    #[allow(clippy::type_complexity)]
    fn offset_records(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        offsets: Vec<(String, i32, i64, i32, String)>,
        now: i64,
    ) -> (
        Vec<ErrorCode>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
        Vec<((String, i32), OffsetValue)>,
    ) {
        let mut codes = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for (topic, partition, offset, leader_epoch, metadata) in offsets {
            if metadata.len() > self.config.offset_metadata_max_bytes {
                codes.push(ErrorCode::OffsetMetadataTooLarge);
                continue;
            }
            if topics.partition(&topic, partition).is_none() {
                codes.push(ErrorCode::UnknownTopicOrPartition);
                continue;
            }
            codes.push(ErrorCode::None);
            let value = OffsetValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp: now,
            };
            let key = records::encode_key(&RecordKey::Offset {
                group: group_id.to_string(),
                topic: topic.clone(),
                partition,
            });
            records.push((key, Some(records::encode_offset(&value))));
            accepted.push(((topic, partition), value));
        }
        (codes, records, accepted)
    }

    /// Whether `__consumer_offsets` exists here (COORDINATOR_NOT_AVAILABLE until the
    /// controller created it, which FindCoordinator asks for).
    pub fn ensure_offsets_topic_exists(&self, topics: &TopicRegistry) -> Result<(), BrokerError> {
        self.ensure_offsets_topic(topics).map(drop)
    }

    fn ensure_offsets_topic(
        &self,
        topics: &TopicRegistry,
    ) -> Result<Arc<crate::storage::topics::Topic>, BrokerError> {
        topics.get(OFFSETS_TOPIC).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::CoordinatorNotAvailable,
                "__consumer_offsets does not exist yet",
            )
        })
    }

    /// Appends records for `group` to its `__consumer_offsets` partition.
    fn write(
        &self,
        topics: &TopicRegistry,
        group: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(Arc<Partition>, Appended), BrokerError> {
        let topic = self.ensure_offsets_topic(topics)?;
        let index = records::partition_for(group, topic.partitions.len() as i32) as usize;
        let partition = topic.partitions[index].clone();
        let refs: Vec<(Option<&[u8]>, Option<&[u8]>)> = records
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let mut batch = runnel_log::batch::build_batch(&refs, self.clock.now_ms());
        let result = partition
            .append_as_leader(|log, epoch| log.append(&mut batch, epoch, self.clock.now_ms()))?;
        Ok((partition, Appended::after(&result)))
    }

    fn persist_group(&self, topics: &TopicRegistry, g: &Group) {
        let key = records::encode_key(&RecordKey::Group {
            group: g.id.clone(),
        });
        if let Err(e) = self.write(
            topics,
            &g.id,
            &[(
                key,
                Some(records::encode_group(&g.to_value(self.clock.now_ms()))),
            )],
        ) {
            tracing::error!(group = %g.id, error = %e, "could not persist group metadata");
        }
    }

    pub fn join(&self, topics: &TopicRegistry, p: JoinParams) -> Pending<JoinResult> {
        if let Err(code) = self.check_coordinator(&p.group_id) {
            return Pending::Ready(JoinResult {
                error: code,
                generation: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id: p.member_id,
                skip_assignment: false,
                members: Vec::new(),
            });
        }
        if p.group_id.is_empty() {
            return Pending::Ready(JoinResult::error(ErrorCode::InvalidGroupId, &p.member_id));
        }
        if p.session_timeout_ms < self.config.min_session_timeout_ms
            || p.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Pending::Ready(JoinResult::error(
                ErrorCode::InvalidSessionTimeout,
                &p.member_id,
            ));
        }
        let mut groups = self.groups.lock();
        if !p.member_id.is_empty() && !groups.contains_key(&p.group_id) {
            return Pending::Ready(JoinResult::error(ErrorCode::UnknownMemberId, &p.member_id));
        }
        let g = groups
            .entry(p.group_id.clone())
            .or_insert_with(|| Group::new(&p.group_id, self.clock.now()));
        if !g.supports(&p.protocol_type, &p.protocols) {
            return Pending::Ready(JoinResult::error(
                ErrorCode::InconsistentGroupProtocol,
                &p.member_id,
            ));
        }
        let (tx, rx) = oneshot::channel();
        let outcome = if p.member_id.is_empty() {
            self.join_unknown_member(topics, g, p, tx)
        } else {
            self.join_known_member(topics, g, p, tx)
        };
        match outcome {
            Some(ready) => Pending::Ready(ready),
            None => Pending::Wait(rx),
        }
    }

    fn new_member(g: &mut Group, id: String, p: &JoinParams, now: Instant) -> Member {
        g.next_join_order += 1;
        Member {
            id,
            instance_id: p.instance_id.clone(),
            client_id: p.client_id.clone(),
            client_host: p.client_host.clone(),
            session_timeout_ms: p.session_timeout_ms,
            rebalance_timeout_ms: p.rebalance_timeout_ms,
            protocols: p.protocols.clone(),
            assignment: Bytes::new(),
            last_heartbeat: now,
            join_order: g.next_join_order,
            join_waiter: None,
            sync_waiter: None,
        }
    }

    fn join_unknown_member(
        &self,
        topics: &TopicRegistry,
        g: &mut Group,
        p: JoinParams,
        tx: oneshot::Sender<JoinResult>,
    ) -> Option<JoinResult> {
        let new_id = format!(
            "{}-{}",
            if p.client_id.is_empty() {
                "member"
            } else {
                &p.client_id
            },
            uuid::Uuid::new_v4()
        );
        if let Some(instance) = p.instance_id.clone() {
            if let Some(old_id) = g.static_members.get(&instance).cloned() {
                return self.replace_static_member(topics, g, &old_id, new_id, p, tx);
            }
            g.static_members.insert(instance, new_id.clone());
        } else if p.require_known_member_id {
            let deadline = self.clock.now() + Duration::from_millis(p.session_timeout_ms as u64);
            g.pending_members.insert(new_id.clone(), deadline);
            return Some(JoinResult::error(ErrorCode::MemberIdRequired, &new_id));
        }
        let mut m = Self::new_member(g, new_id.clone(), &p, self.clock.now());
        m.join_waiter = Some(tx);
        g.members.insert(new_id, m);
        if g.protocol_type.is_none() {
            g.protocol_type = Some(p.protocol_type.clone());
        }
        self.prepare_rebalance(topics, g);
        None
    }

    /// A static member restarted (new member id, same instance id): it takes over the
    /// old member's place; a Stable group keeps its assignment without a rebalance.
    fn replace_static_member(
        &self,
        topics: &TopicRegistry,
        g: &mut Group,
        old_id: &str,
        new_id: String,
        p: JoinParams,
        tx: oneshot::Sender<JoinResult>,
    ) -> Option<JoinResult> {
        let Some(mut m) = g.members.remove(old_id) else {
            g.static_members
                .remove(p.instance_id.as_deref().unwrap_or_default());
            return self.join_unknown_member(topics, g, p, tx);
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(ErrorCode::FencedInstanceId, old_id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ErrorCode::FencedInstanceId));
        }
        let protocols_changed = m.protocols != p.protocols;
        m.id = new_id.clone();
        m.protocols = p.protocols.clone();
        m.session_timeout_ms = p.session_timeout_ms;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.client_id = p.client_id.clone();
        m.client_host = p.client_host.clone();
        m.last_heartbeat = self.clock.now();
        if g.leader.as_deref() == Some(old_id) {
            g.leader = Some(new_id.clone());
        }
        g.static_members
            .insert(p.instance_id.clone().unwrap_or_default(), new_id.clone());
        let stable_and_same = g.state == GroupState::Stable && !protocols_changed;
        if !stable_and_same {
            m.join_waiter = Some(tx);
        }
        g.members.insert(new_id.clone(), m);
        if stable_and_same {
            self.persist_group(topics, g);
            let is_leader = g.leader.as_deref() == Some(new_id.as_str());
            return Some(JoinResult {
                error: ErrorCode::None,
                generation: g.generation,
                protocol_type: g.protocol_type.clone(),
                protocol_name: g.protocol.clone(),
                leader: g.leader.clone().unwrap_or_default(),
                member_id: new_id,
                skip_assignment: is_leader,
                members: if is_leader {
                    member_list(g)
                } else {
                    Vec::new()
                },
            });
        }
        self.prepare_rebalance(topics, g);
        None
    }

    fn join_known_member(
        &self,
        topics: &TopicRegistry,
        g: &mut Group,
        p: JoinParams,
        tx: oneshot::Sender<JoinResult>,
    ) -> Option<JoinResult> {
        if let Some(instance) = &p.instance_id {
            if g.static_members
                .get(instance)
                .is_some_and(|id| *id != p.member_id)
            {
                return Some(JoinResult::error(ErrorCode::FencedInstanceId, &p.member_id));
            }
        }
        if g.pending_members.remove(&p.member_id).is_some() {
            let mut m = Self::new_member(g, p.member_id.clone(), &p, self.clock.now());
            m.join_waiter = Some(tx);
            g.members.insert(p.member_id.clone(), m);
            if g.protocol_type.is_none() {
                g.protocol_type = Some(p.protocol_type.clone());
            }
            if g.state == GroupState::PreparingRebalance {
                self.try_complete_join(topics, g);
            } else {
                self.prepare_rebalance(topics, g);
            }
            return None;
        }
        let state = g.state;
        let leader = g.leader.clone();
        let Some(m) = g.members.get_mut(&p.member_id) else {
            return Some(JoinResult::error(ErrorCode::UnknownMemberId, &p.member_id));
        };
        let protocols_changed = m.protocols != p.protocols;
        m.protocols = p.protocols.clone();
        m.last_heartbeat = self.clock.now();
        match state {
            GroupState::PreparingRebalance => {
                m.join_waiter = Some(tx);
                self.try_complete_join(topics, g);
                None
            }
            GroupState::Stable | GroupState::CompletingRebalance
                if !protocols_changed && leader.as_deref() != Some(p.member_id.as_str()) =>
            {
                // A follower re-sending its join: answer with the current generation.
                Some(JoinResult {
                    error: ErrorCode::None,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol.clone(),
                    leader: leader.unwrap_or_default(),
                    member_id: p.member_id,
                    skip_assignment: false,
                    members: Vec::new(),
                })
            }
            _ => {
                m.join_waiter = Some(tx);
                self.prepare_rebalance(topics, g);
                None
            }
        }
    }

    fn prepare_rebalance(&self, topics: &TopicRegistry, g: &mut Group) {
        let now = self.clock.now();
        if g.state == GroupState::CompletingRebalance {
            for m in g.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(ErrorCode::RebalanceInProgress));
                }
                m.assignment = Bytes::new();
            }
        }
        if g.state != GroupState::PreparingRebalance {
            let delay = if g.state == GroupState::Empty {
                Duration::from_millis(self.config.initial_rebalance_delay_ms)
            } else {
                Duration::ZERO
            };
            g.join_not_before = now + delay;
            g.rebalance_deadline = now + g.max_rebalance_timeout().max(delay);
            g.state = GroupState::PreparingRebalance;
            tracing::debug!(group = %g.id, members = g.members.len(), "preparing rebalance");
        }
        self.try_complete_join(topics, g);
    }

    fn try_complete_join(&self, topics: &TopicRegistry, g: &mut Group) {
        if g.state == GroupState::PreparingRebalance
            && g.all_joined()
            && self.clock.now() >= g.join_not_before
        {
            self.complete_join(topics, g);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation
    /// starts, and every waiting member gets its JoinGroup response.
    fn complete_join(&self, topics: &TopicRegistry, g: &mut Group) {
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            remove_member(g, &id);
        }
        g.pending_members.clear();
        g.generation += 1;
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.protocol = None;
            g.leader = None;
            self.persist_group(topics, g);
            return;
        }
        g.protocol = g.select_protocol();
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g
                .members
                .values()
                .min_by_key(|m| m.join_order)
                .map(|m| m.id.clone());
        }
        g.state = GroupState::CompletingRebalance;
        g.rebalance_deadline = self.clock.now() + g.max_rebalance_timeout();
        let leader = g.leader.clone().unwrap_or_default();
        let all = member_list(g);
        let now = self.clock.now();
        for m in g.members.values_mut() {
            m.last_heartbeat = now;
            if let Some(w) = m.join_waiter.take() {
                let is_leader = m.id == leader;
                let _ = w.send(JoinResult {
                    error: ErrorCode::None,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    skip_assignment: false,
                    members: if is_leader { all.clone() } else { Vec::new() },
                });
            }
        }
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), protocol = ?g.protocol, "group rebalanced");
    }

    fn check_member(
        g: &Group,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            if g.static_members
                .get(instance)
                .is_some_and(|id| id != member_id)
            {
                return Err(ErrorCode::FencedInstanceId);
            }
        }
        if !g.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        if generation != g.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncResult> {
        if let Err(code) = self.check_coordinator(group_id) {
            return Pending::Ready(SyncResult::error(code));
        }
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return Pending::Ready(SyncResult::error(ErrorCode::UnknownMemberId));
        };
        if let Err(code) = Self::check_member(g, member_id, instance_id, generation) {
            return Pending::Ready(SyncResult::error(code));
        }
        if protocol_type.is_some_and(|t| Some(t) != g.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != g.protocol.as_deref())
        {
            return Pending::Ready(SyncResult::error(ErrorCode::InconsistentGroupProtocol));
        }
        match g.state {
            GroupState::Empty => Pending::Ready(SyncResult::error(ErrorCode::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                Pending::Ready(SyncResult::error(ErrorCode::RebalanceInProgress))
            }
            GroupState::Stable => {
                let m = &g.members[member_id];
                Pending::Ready(SyncResult {
                    error: ErrorCode::None,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol.clone(),
                    assignment: m.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = g.members.get_mut(member_id) {
                    m.sync_waiter = Some(tx);
                    m.last_heartbeat = self.clock.now();
                }
                if g.leader.as_deref() == Some(member_id) {
                    let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in g.members.values_mut() {
                        m.assignment = assigned.remove(&m.id).unwrap_or_default();
                    }
                    g.state = GroupState::Stable;
                    self.persist_group(topics, g);
                    for m in g.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: ErrorCode::None,
                                protocol_type: g.protocol_type.clone(),
                                protocol_name: g.protocol.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Pending::Wait(rx)
            }
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> ErrorCode {
        if let Err(code) = self.check_coordinator(group_id) {
            return code;
        }
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if let Err(code) = Self::check_member(g, member_id, instance_id, generation) {
            return code;
        }
        if let Some(m) = g.members.get_mut(member_id) {
            m.last_heartbeat = self.clock.now();
        }
        match g.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::Empty => ErrorCode::UnknownMemberId,
            _ => ErrorCode::None,
        }
    }

    /// Removes members (by member id, or by instance id for static members). Returns an
    /// error code per member.
    pub fn leave(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.check_coordinator(group_id)?;
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        let mut results = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance_id) in members {
            let target = match instance_id {
                Some(instance) => match g.static_members.get(instance) {
                    Some(id) if member_id.is_empty() || id == member_id => Some(id.clone()),
                    Some(_) => {
                        results.push(ErrorCode::FencedInstanceId);
                        continue;
                    }
                    None => None,
                },
                None => g.members.contains_key(member_id).then(|| member_id.clone()),
            };
            match target {
                Some(id) => {
                    remove_member(g, &id);
                    removed = true;
                    results.push(ErrorCode::None);
                }
                None if g.pending_members.remove(member_id).is_some() => {
                    results.push(ErrorCode::None)
                }
                None => results.push(ErrorCode::UnknownMemberId),
            }
        }
        if removed {
            self.after_member_removed(topics, g);
        }
        Ok(results)
    }

    fn after_member_removed(&self, topics: &TopicRegistry, g: &mut Group) {
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if g.members.is_empty() {
                    g.generation += 1;
                    g.state = GroupState::Empty;
                    g.protocol = None;
                    g.leader = None;
                    self.persist_group(topics, g);
                } else {
                    self.prepare_rebalance(topics, g);
                }
            }
            GroupState::PreparingRebalance => self.try_complete_join(topics, g),
            GroupState::Empty => {}
        }
    }

    /// Commits offsets. `generation` -1 with an empty member id is a commit from outside
    /// any group (admin tools, assign()-based consumers), allowed while the group has no
    /// members.
    pub fn commit_offsets(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<(String, i32, i64, i32, String)>,
    ) -> (Vec<ErrorCode>, CommitWait) {
        let fail = |code: ErrorCode, n: usize| (vec![code; n], None);
        if group_id.is_empty() {
            return fail(ErrorCode::InvalidGroupId, offsets.len());
        }
        if let Err(code) = self.check_coordinator(group_id) {
            return fail(code, offsets.len());
        }
        let consumer_groups = self.consumer_groups.lock();
        let mut groups = self.groups.lock();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, self.clock.now()));
        if let Some(cg) = consumer_groups
            .get(group_id)
            .filter(|cg| !cg.members.is_empty())
        {
            // KIP-848 group: the member's epoch is the fence (STALE_MEMBER_EPOCH otherwise).
            if let Err(code) = cg.has_member_epoch(member_id, generation) {
                tracing::debug!(
                    group = group_id,
                    member = member_id,
                    epoch = generation,
                    ?code,
                    "offset commit fenced"
                );
                return fail(code, offsets.len());
            }
        } else if generation < 0 && member_id.is_empty() {
            if !g.members.is_empty() {
                return fail(ErrorCode::UnknownMemberId, offsets.len());
            }
        } else {
            if let Err(code) = Self::check_member(g, member_id, instance_id, generation) {
                return fail(code, offsets.len());
            }
            if g.state == GroupState::CompletingRebalance {
                return fail(ErrorCode::RebalanceInProgress, offsets.len());
            }
            if let Some(m) = g.members.get_mut(member_id) {
                m.last_heartbeat = self.clock.now();
            }
        }
        let now = self.clock.now_ms();
        let (codes, records, accepted) = self.offset_records(topics, group_id, offsets, now);
        if records.is_empty() {
            return (codes, None);
        }
        match self.write(topics, group_id, &records) {
            Ok(wait) => {
                g.offsets.extend(accepted);
                (codes, Some(wait))
            }
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "offset commit could not be written");
                let n = codes.len();
                fail(commit_error(e.code), n)
            }
        }
    }

    /// Committed offsets of a group: for the given partitions, or all when None.
    /// Unknown partitions come back with offset -1, as in Kafka.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, i32)>>,
    ) -> Vec<(String, i32, Option<OffsetValue>)> {
        let groups = self.groups.lock();
        let g = groups.get(group_id);
        match wanted {
            Some(list) => list
                .into_iter()
                .map(|(t, p)| {
                    let v = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                    (t, p, v)
                })
                .collect(),
            None => {
                let mut all: Vec<_> = g.map_or_else(Vec::new, |g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                        .collect()
                });
                all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                all
            }
        }
    }

    /// Whether an open transaction has committed an offset of `group` for `(topic,
    /// partition)`: KIP-447's unstable offset. A consumer that asks for stable offsets
    /// (OffsetFetch `require_stable`, sent by read_committed consumers) gets
    /// UNSTABLE_OFFSET_COMMIT and asks again, so a partition's new owner never starts from
    /// the offset before a transaction that is still completing (its markers go out
    /// after EndTxn is answered) and reads its rows twice.
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .lock()
            .values()
            .flatten()
            .any(|(g, (t, p), _)| g == group_id && t == topic && *p == partition)
    }

    /// (group id, protocol type, state, group type) of every group.
    pub fn list(&self) -> Vec<(String, String, String, &'static str)> {
        let consumer_groups = self.consumer_groups.lock();
        let groups = self.groups.lock();
        let mut out: Vec<_> = consumer_groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    "consumer".to_string(),
                    g.state().to_string(),
                    "consumer",
                )
            })
            .collect();
        out.extend(
            groups
                .values()
                .filter(|g| !consumer_groups.contains_key(&g.id))
                .map(|g| {
                    (
                        g.id.clone(),
                        g.protocol_type.clone().unwrap_or_default(),
                        g.state.name().to_string(),
                        "classic",
                    )
                }),
        );
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        m.metadata_for(&protocol),
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// Deletes an empty group and its offsets.
    pub fn delete_group(&self, topics: &TopicRegistry, group_id: &str) -> ErrorCode {
        if let Err(code) = self.check_coordinator(group_id) {
            return code;
        }
        let mut groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            return ErrorCode::GroupIdNotFound;
        };
        if !g.members.is_empty() {
            return ErrorCode::NonEmptyGroup;
        }
        let mut tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = g
            .offsets
            .keys()
            .map(|(t, p)| {
                (
                    records::encode_key(&RecordKey::Offset {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                    }),
                    None,
                )
            })
            .collect();
        tombstones.push((
            records::encode_key(&RecordKey::Group {
                group: group_id.to_string(),
            }),
            None,
        ));
        if let Err(e) = self.write(topics, group_id, &tombstones) {
            tracing::error!(group = group_id, error = %e, "could not write group tombstones");
            return ErrorCode::KafkaStorageError;
        }
        groups.remove(group_id);
        ErrorCode::None
    }

    /// Deletes committed offsets of partitions the group does not consume (OffsetDelete).
    pub fn delete_offsets(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.check_coordinator(group_id)?;
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        let subscribed: HashSet<String> = match g.protocol_type.as_deref() {
            Some("consumer") if !g.members.is_empty() => g
                .members
                .values()
                .flat_map(|m| {
                    consumer_subscription(
                        &m.metadata_for(g.protocol.as_deref().unwrap_or_default()),
                    )
                })
                .collect(),
            _ => HashSet::new(),
        };
        let mut codes = Vec::new();
        let mut tombstones = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(&t) {
                codes.push(ErrorCode::GroupSubscribedToTopic);
                continue;
            }
            if g.offsets.remove(&(t.clone(), p)).is_some() {
                tombstones.push((
                    records::encode_key(&RecordKey::Offset {
                        group: group_id.to_string(),
                        topic: t,
                        partition: p,
                    }),
                    None,
                ));
            }
            codes.push(ErrorCode::None);
        }
        if !tombstones.is_empty() {
            if let Err(e) = self.write(topics, group_id, &tombstones) {
                tracing::error!(group = group_id, error = %e, "could not write offset tombstones");
                return Err(ErrorCode::KafkaStorageError);
            }
        }
        Ok(codes)
    }

    /// TxnOffsetCommit: writes the offsets as a transactional batch of the producer and
    /// holds them back until the transaction's marker (`complete_txn_offsets`).
    #[allow(clippy::too_many_arguments)]
    pub fn txn_commit_offsets(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<(String, i32, i64, i32, String)>,
    ) -> (Vec<ErrorCode>, CommitWait) {
        let fail = |code: ErrorCode, n: usize| (vec![code; n], None);
        if let Err(code) = self.check_coordinator(group_id) {
            return fail(code, offsets.len());
        }
        let mut pending = self.pending_txn.lock();
        {
            // KIP-447: a consumer-group-aware producer is fenced by the group generation.
            let groups = self.groups.lock();
            if let Some(g) = groups.get(group_id) {
                if !member_id.is_empty() && generation >= 0 && !g.members.is_empty() {
                    if let Err(code) = Self::check_member(g, member_id, instance_id, generation) {
                        return fail(code, offsets.len());
                    }
                }
            }
        }
        let now = self.clock.now_ms();
        let (codes, recs, accepted) = self.offset_records(topics, group_id, offsets, now);
        let accepted: Vec<(String, (String, i32), OffsetValue)> = accepted
            .into_iter()
            .map(|(k, v)| (group_id.to_string(), k, v))
            .collect();
        if recs.is_empty() {
            return (codes, None);
        }
        let written = (|| -> Result<(Arc<Partition>, Appended), BrokerError> {
            let topic = self.ensure_offsets_topic(topics)?;
            let index = records::partition_for(group_id, topic.partitions.len() as i32) as usize;
            let partition = topic.partitions[index].clone();
            let refs: Vec<(Option<&[u8]>, Option<&[u8]>)> = recs
                .iter()
                .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
                .collect();
            let mut batch = runnel_log::batch::build_batch(&refs, now);
            runnel_log::batch::set_producer(&mut batch, producer_id, producer_epoch, true);
            let r = partition.append_as_leader(|log, epoch| {
                log.append_from(
                    &mut batch,
                    epoch,
                    now,
                    runnel_log::AppendOrigin::Coordinator,
                )
            })?;
            Ok((partition, Appended::after(&r)))
        })();
        match written {
            Ok(wait) => {
                pending.entry(producer_id).or_default().extend(accepted);
                (codes, Some(wait))
            }
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "transactional offset commit could not be written");
                let code = if e.code == ErrorCode::InvalidProducerEpoch {
                    ErrorCode::ProducerFenced
                } else {
                    commit_error(e.code)
                };
                let n = codes.len();
                fail(code, n)
            }
        }
    }

    /// Applies (commit) or drops (abort) a producer's transactional offset commits,
    /// once its marker is in `__consumer_offsets`.
    pub fn complete_txn_offsets(&self, producer_id: i64, commit: bool) {
        let pending = self
            .pending_txn
            .lock()
            .remove(&producer_id)
            .unwrap_or_default();
        if !commit || pending.is_empty() {
            return;
        }
        let mut groups = self.groups.lock();
        for (group, key, value) in pending {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, self.clock.now()))
                .offsets
                .insert(key, value);
        }
    }

    /// A KIP-848 heartbeat (join, stay, leave).
    pub fn consumer_heartbeat(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        p: consumer::HeartbeatParams,
    ) -> consumer::HeartbeatResult {
        if let Err(code) = self.check_coordinator(group_id) {
            return consumer::HeartbeatResult {
                error: code,
                message: Some("this broker does not coordinate the group".into()),
                member_id: String::new(),
                member_epoch: -1,
                assignment: None,
            };
        }
        if group_id.is_empty() {
            return consumer::HeartbeatResult {
                error: ErrorCode::InvalidGroupId,
                message: Some("empty group id".into()),
                member_id: p.member_id,
                member_epoch: -1,
                assignment: None,
            };
        }
        let mut consumer_groups = self.consumer_groups.lock();
        if !consumer_groups.contains_key(group_id) {
            let classic_busy = self
                .groups
                .lock()
                .get(group_id)
                .is_some_and(|g| !g.members.is_empty());
            if classic_busy {
                return consumer::HeartbeatResult {
                    error: ErrorCode::GroupIdNotFound,
                    message: Some(format!("group '{group_id}' is a classic group with members; it cannot take consumer-protocol members")),
                    member_id: p.member_id,
                    member_epoch: -1,
                    assignment: None,
                };
            }
        }
        let catalog: consumer::TopicCatalog = topics
            .all()
            .iter()
            .filter(|t| !t.name.starts_with("__"))
            .map(|t| (t.id, t.name.clone(), t.partitions.len() as i32))
            .collect();
        let g = consumer_groups
            .entry(group_id.to_string())
            .or_insert_with(|| consumer::ConsumerGroup::new(group_id));
        g.heartbeat(p, &catalog, self.clock.now())
    }

    /// A KIP-848 group's session timeout: its `consumer.session.timeout.ms` group config,
    /// else the broker's `group.consumer.session.timeout.ms`.
    pub fn consumer_session_timeout_ms(&self, group_id: &str) -> i32 {
        self.configs
            .get_i32(group_id, group_configs::CONSUMER_SESSION_TIMEOUT_MS)
            .unwrap_or(self.config.consumer_session_timeout_ms)
            .max(0)
    }

    /// A KIP-848 group's heartbeat interval, likewise (`consumer.heartbeat.interval.ms`).
    pub fn consumer_heartbeat_interval_ms(&self, group_id: &str) -> i32 {
        self.configs
            .get_i32(group_id, group_configs::CONSUMER_HEARTBEAT_INTERVAL_MS)
            .unwrap_or(self.config.consumer_heartbeat_interval_ms)
    }

    /// Runs `f` on a KIP-848 group, if it exists.
    pub fn with_consumer_group<R>(
        &self,
        group_id: &str,
        f: impl FnOnce(&consumer::ConsumerGroup) -> R,
    ) -> Option<R> {
        self.consumer_groups.lock().get(group_id).map(f)
    }

    /// Runs the timers: join and sync deadlines, session expiry, pending-member expiry,
    /// offset expiry. Returns the earliest deadline still ahead, so the timer loop can
    /// wake exactly then (Kafka expires a session at its deadline, not on a coarse tick).
    pub fn tick(&self, topics: &TopicRegistry) -> Option<Instant> {
        let now = self.clock.now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        {
            let mut consumer_groups = self.consumer_groups.lock();
            for g in consumer_groups.values_mut() {
                let timeout = Duration::from_millis(self.consumer_session_timeout_ms(&g.id) as u64);
                if g.expire(timeout, now) {
                    tracing::info!(group = %g.id, "consumer-protocol members' sessions expired");
                }
                if let Some(t) = g.next_session_deadline(timeout) {
                    consider(t);
                }
            }
        }
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
            let abandoned: Vec<String> = g
                .pending_members
                .iter()
                .filter(|(_, deadline)| now >= **deadline)
                .map(|(id, _)| id.clone())
                .collect();
            if !abandoned.is_empty() {
                // KIP-394: the client never joined with the id it was given.
                tracing::info!(group = %g.id, members = ?abandoned, "pending members expired");
                for id in &abandoned {
                    g.pending_members.remove(id);
                }
                self.try_complete_join(topics, g);
            }
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| m.expired(now))
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                tracing::info!(group = %g.id, members = ?expired, "members' sessions expired");
                for id in &expired {
                    remove_member(g, id);
                }
                self.after_member_removed(topics, g);
            }
            match g.state {
                GroupState::PreparingRebalance
                    if now >= g.rebalance_deadline
                        || (g.all_joined() && now >= g.join_not_before) =>
                {
                    self.complete_join(topics, g)
                }
                GroupState::CompletingRebalance if now >= g.rebalance_deadline => {
                    // The leader never sent its assignment: start over.
                    tracing::info!(group = %g.id, "leader did not sync within the rebalance timeout");
                    self.prepare_rebalance(topics, g);
                }
                _ => {}
            }
            g.pending_members.values().for_each(|t| consider(*t));
            g.members
                .values()
                .for_each(|m| consider(m.session_deadline()));
            match g.state {
                GroupState::PreparingRebalance => {
                    consider(g.rebalance_deadline);
                    consider(g.join_not_before);
                }
                GroupState::CompletingRebalance => consider(g.rebalance_deadline),
                _ => {}
            }
        }
        let retention = self.config.offsets_retention_ms;
        let cutoff = self.clock.now_ms() - retention;
        let mut emptied = Vec::new();
        for g in groups.values_mut().filter(|g| g.state == GroupState::Empty) {
            let old: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, v)| v.commit_timestamp < cutoff)
                .map(|(k, _)| k.clone())
                .collect();
            if old.is_empty() {
                continue;
            }
            let tombstones: Vec<_> = old
                .iter()
                .map(|(t, p)| {
                    (
                        records::encode_key(&RecordKey::Offset {
                            group: g.id.clone(),
                            topic: t.clone(),
                            partition: *p,
                        }),
                        None,
                    )
                })
                .collect();
            if self.write(topics, &g.id, &tombstones).is_ok() {
                for k in old {
                    g.offsets.remove(&k);
                }
            }
            if g.offsets.is_empty() {
                emptied.push(g.id.clone());
            }
        }
        for id in emptied {
            let tomb = vec![(
                records::encode_key(&RecordKey::Group { group: id.clone() }),
                None,
            )];
            if self.write(topics, &id, &tomb).is_ok() {
                groups.remove(&id);
            }
        }
        next
    }
}

fn member_list(g: &Group) -> Vec<(String, Option<String>, Bytes)> {
    let protocol = g.protocol.clone().unwrap_or_default();
    let mut members: Vec<&Member> = g.members.values().collect();
    members.sort_by_key(|m| m.join_order);
    members
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                m.instance_id.clone(),
                m.metadata_for(&protocol),
            )
        })
        .collect()
}

fn remove_member(g: &mut Group, id: &str) {
    if let Some(mut m) = g.members.remove(id) {
        if let Some(instance) = &m.instance_id {
            if g.static_members.get(instance).is_some_and(|s| s == id) {
                g.static_members.remove(instance);
            }
        }
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(ErrorCode::UnknownMemberId, id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ErrorCode::UnknownMemberId));
        }
    }
    if g.leader.as_deref() == Some(id) {
        g.leader = None;
    }
}

/// Topics in a consumer-protocol subscription (ConsumerProtocolSubscription: version i16,
/// then an array of i16-length strings). Malformed metadata yields no topics.
fn consumer_subscription(metadata: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    let mut b = metadata;
    let read_i16 = |b: &mut &[u8]| -> Option<i16> {
        let v = i16::from_be_bytes(b.get(..2)?.try_into().ok()?);
        *b = &b[2..];
        Some(v)
    };
    let Some(_version) = read_i16(&mut b) else {
        return topics;
    };
    let Some(count) = b
        .get(..4)
        .and_then(|c| c.try_into().ok())
        .map(i32::from_be_bytes)
    else {
        return topics;
    };
    b = &b[4..];
    for _ in 0..count.max(0) {
        let Some(len) = read_i16(&mut b) else { break };
        let Some(name) = b.get(..len.max(0) as usize) else {
            break;
        };
        topics.push(String::from_utf8_lossy(name).into_owned());
        b = &b[len.max(0) as usize..];
    }
    topics
}

/// Applies one `__consumer_offsets` record during start-up replay.
fn replay(
    groups: &mut HashMap<String, Group>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    now: Instant,
) {
    let Some(key) = key.and_then(records::decode_key) else {
        return;
    };
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            let g = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now));
            match value.and_then(records::decode_offset) {
                Some(v) => {
                    g.offsets.insert((topic, partition), v);
                }
                None => {
                    g.offsets.remove(&(topic, partition));
                }
            }
        }
        RecordKey::Group { group } => match value.and_then(records::decode_group) {
            Some(v) => {
                let g = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now));
                g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
                g.generation = v.generation;
                g.protocol = v.protocol;
                g.leader = v.leader;
                g.members.clear();
                g.static_members.clear();
                // Replayed members start their session now.
                for (i, m) in v.members.into_iter().enumerate() {
                    if let Some(instance) = &m.instance_id {
                        g.static_members
                            .insert(instance.clone(), m.member_id.clone());
                    }
                    let protocol = g.protocol.clone().unwrap_or_default();
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols: vec![(protocol, m.subscription)],
                            assignment: m.assignment,
                            // Members get a full session after a restart to come back.
                            last_heartbeat: now,
                            join_order: i as u64,
                            join_waiter: None,
                            sync_waiter: None,
                        },
                    );
                }
                g.next_join_order = g.members.len() as u64;
                g.state = if g.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
            }
            None => {
                groups.remove(&group);
            }
        },
    }
}

/// Replay of an internal topic reads every batch a past version or a client could have
/// written there; a record it cannot read (damaged, or inflating past the cap) is skipped
/// with a log line naming where it is, never a refusal to start.
pub(crate) fn skip_unreadable(
    p: &Partition,
    h: &runnel_log::BatchHeader,
    read: Result<(), runnel_log::LogError>,
) {
    if let Err(e) = read {
        tracing::warn!(topic = %p.topic, partition = p.index, offset = h.base_offset, last_offset = h.last_offset(), error = %e, "replay skipped records it cannot read");
    }
}

/// The coordinator partitions (of `__consumer_offsets` or `__transaction_state`) whose
/// files failed recovery: their groups or transactional ids answer
/// COORDINATOR_NOT_AVAILABLE rather than an empty state, as Kafka does while the
/// partition is offline. Thread-safe.
#[derive(Default)]
pub(crate) struct OfflineCoordinatorPartitions(
    parking_lot::RwLock<(std::collections::BTreeSet<i32>, i32)>,
);

impl OfflineCoordinatorPartitions {
    /// Records `p` (of a topic with `count` partitions) if it is offline.
    pub(crate) fn note(&self, p: &Partition, count: i32) {
        let mut offline = self.0.write();
        offline.1 = count;
        if p.storage_offline {
            offline.0.insert(p.index);
        }
    }

    /// Whether the partition that holds `id` is offline.
    pub(crate) fn holds(&self, id: &str) -> bool {
        let offline = self.0.read();
        !offline.0.is_empty() && offline.0.contains(&records::partition_for(id, offline.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `storeOffsets` mapping: a coordinator that cannot write the group's
    /// partition sends the client to look for the coordinator again.
    #[test]
    fn a_failed_commit_write_answers_as_kafka_does() {
        use ErrorCode::*;
        assert_eq!(commit_error(KafkaStorageError), NotCoordinator);
        assert_eq!(commit_error(NotLeaderOrFollower), NotCoordinator);
        assert_eq!(commit_error(NotEnoughReplicas), CoordinatorNotAvailable);
        assert_eq!(commit_error(RequestTimedOut), CoordinatorNotAvailable);
        assert_eq!(commit_error(MessageTooLarge), InvalidCommitOffsetSize);
        assert_eq!(commit_error(RecordListTooLarge), InvalidCommitOffsetSize);
        assert_eq!(commit_error(CorruptMessage), UnknownServerError);
    }

    fn registry(dir: &std::path::Path) -> TopicRegistry {
        let pairs = [("log.dirs".to_string(), dir.display().to_string())];
        let config = crate::config::BrokerConfig::from_pairs(&pairs).expect("valid config");
        TopicRegistry::open(Arc::new(config)).expect("registry opens")
    }

    /// A coordinator that leads the (one-partition) `__consumer_offsets` of `topics`,
    /// on a clock that moves only when the test advances it.
    fn coordinator(topics: &TopicRegistry) -> (GroupCoordinator, Arc<runnel_core::ManualClock>) {
        let clock = Arc::new(runnel_core::ManualClock::new());
        let config = GroupConfig {
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 10,
            offsets_topic_partitions: 1,
            ..GroupConfig::default()
        };
        let c = GroupCoordinator::with_clock(config, clock.clone());
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let offsets = topics
            .create(OFFSETS_TOPIC, 1, configs, false)
            .expect("offsets topic created");
        lead(&offsets);
        c.on_leadership(&offsets.partitions[0], 1, true);
        (c, clock)
    }

    /// Makes this broker the leader of every partition of `t`, its ISR itself, as the
    /// metadata image of a single node says.
    fn lead(t: &crate::storage::topics::Topic) {
        let me = crate::config::BrokerConfig::default().node_id;
        for p in &t.partitions {
            let state = runnel_meta::PartitionImage::new(vec![me]);
            crate::storage::replication::apply_state(p, me, &state);
            crate::storage::replication::maybe_advance_high_watermark(p);
        }
    }

    fn params(member_id: &str, instance_id: Option<&str>, session_timeout_ms: i32) -> JoinParams {
        JoinParams {
            group_id: "g".into(),
            member_id: member_id.into(),
            instance_id: instance_id.map(String::from),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            session_timeout_ms,
            rebalance_timeout_ms: 300_000,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
        }
    }

    fn ready(p: Pending<JoinResult>) -> JoinResult {
        match p {
            Pending::Ready(r) => r,
            Pending::Wait(mut rx) => rx.try_recv().expect("join answered at once"),
        }
    }

    /// A member in a Stable group of one: joins with the id it is given, then syncs.
    fn stable_member(c: &GroupCoordinator, topics: &TopicRegistry, session_ms: i32) -> String {
        let first = ready(c.join(topics, params("", None, session_ms)));
        assert_eq!(first.error, ErrorCode::MemberIdRequired);
        let joined = ready(c.join(topics, params(&first.member_id, None, session_ms)));
        assert_eq!(joined.error, ErrorCode::None);
        assert!(matches!(sync(c, topics, &joined), Pending::Wait(_)));
        joined.member_id
    }

    /// The member of `joined` syncs, as leader, with no assignments.
    fn sync(
        c: &GroupCoordinator,
        topics: &TopicRegistry,
        joined: &JoinResult,
    ) -> Pending<SyncResult> {
        let (generation, member) = (joined.generation, &joined.member_id);
        c.sync(topics, "g", generation, member, None, None, None, vec![])
    }

    // A runtime: partitions start their group-commit task.
    #[tokio::test]
    async fn an_abandoned_pending_member_stops_blocking_the_join_after_its_session_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let topics = registry(dir.path());
        let (c, clock) = coordinator(&topics);
        let a = stable_member(&c, &topics, 10_000);
        // A second client gets an id (KIP-394) and never joins with it.
        let pending = ready(c.join(&topics, params("", None, 300)));
        assert_eq!(pending.error, ErrorCode::MemberIdRequired);
        // The first member rejoins with new metadata: a rebalance that waits for the
        // pending member, but only for its session timeout, not the rebalance timeout.
        let mut p = params(&a, None, 10_000);
        p.protocols = vec![("range".into(), Bytes::from_static(b"changed"))];
        let Pending::Wait(mut rx) = c.join(&topics, p) else {
            panic!("the join completed while a pending member was outstanding");
        };
        let next = c.tick(&topics).expect("a deadline is ahead");
        assert_eq!(next, clock.now() + Duration::from_millis(300));
        clock.advance(Duration::from_millis(299));
        c.tick(&topics);
        assert!(
            rx.try_recv().is_err(),
            "completed before the pending member expired"
        );
        clock.advance(Duration::from_millis(1));
        c.tick(&topics);
        let r = rx
            .try_recv()
            .expect("join completed once the pending member expired");
        assert_eq!(r.error, ErrorCode::None);
        assert_eq!(r.generation, 2);
    }

    #[tokio::test]
    async fn a_session_expires_at_its_deadline_and_an_offset_commit_counts_as_a_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let topics = registry(dir.path());
        let (c, clock) = coordinator(&topics);
        let t = topics
            .create("t", 1, BTreeMap::new(), false)
            .expect("topic created");
        lead(&t);
        let a = stable_member(&c, &topics, 400);
        // Stable: the leader's sync completed the rebalance.
        clock.advance(Duration::from_millis(200));
        let committed = clock.now();
        let (codes, _) = c.commit_offsets(
            &topics,
            "g",
            1,
            &a,
            None,
            vec![("t".into(), 0, 5, -1, String::new())],
        );
        assert_eq!(codes, vec![ErrorCode::None]);
        // The timer's next wake-up is the session deadline counted from the commit.
        let next = c.tick(&topics).expect("the session deadline is ahead");
        assert_eq!(next, committed + Duration::from_millis(400));
        clock.advance(Duration::from_millis(399));
        c.tick(&topics);
        assert_eq!(c.delete_group(&topics, "g"), ErrorCode::NonEmptyGroup);
        clock.advance(Duration::from_millis(1));
        c.tick(&topics);
        // At the deadline, not a timer tick later: the group can be deleted at once.
        assert_eq!(c.delete_group(&topics, "g"), ErrorCode::None);
    }

    /// A five-minute rebalance timeout, run in test time: a leader that never sends its
    /// assignment holds the group in CompletingRebalance exactly until the timeout, then
    /// the group rebalances again (Kafka's `onCompleteJoin` sync timer).
    #[tokio::test]
    async fn a_leader_that_never_syncs_is_timed_out_at_its_rebalance_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let topics = registry(dir.path());
        let (c, clock) = coordinator(&topics);
        // Sessions longer than the rebalance timeout (300 s in `params`), so only the
        // rebalance timer can fire.
        let first = ready(c.join(&topics, params("", None, 600_000)));
        let joined = ready(c.join(&topics, params(&first.member_id, None, 600_000)));
        assert_eq!(joined.error, ErrorCode::None);
        let state = || c.describe("g").expect("group exists").state;
        assert_eq!(state(), GroupState::CompletingRebalance);
        let next = c.tick(&topics).expect("the rebalance deadline is ahead");
        assert_eq!(next, clock.now() + Duration::from_secs(300));
        clock.advance(Duration::from_millis(299_999));
        c.tick(&topics);
        assert_eq!(state(), GroupState::CompletingRebalance);
        clock.advance(Duration::from_millis(1));
        c.tick(&topics);
        assert_eq!(state(), GroupState::PreparingRebalance);
        // The late sync is told to rejoin.
        let Pending::Ready(r) = sync(&c, &topics, &joined) else {
            panic!("a sync during a rebalance is answered at once")
        };
        assert_eq!(r.error, ErrorCode::RebalanceInProgress);
    }
}
