//! The transaction coordinator: transactional ids, their producer ids and epochs, and the
//! two-phase end of a transaction (state PrepareCommit/PrepareAbort written to
//! `__transaction_state`, markers written to every partition, then Complete*).
//!
//! Invariants: a producer epoch only grows; a partition gets a transactional batch only
//! after it was added to that producer's ongoing transaction (checked at produce, so a
//! zombie cannot start a transaction the coordinator does not know); a transaction is
//! decided once, in `__transaction_state`, before any marker is written, so a crash
//! between markers is finished at start-up the same way on every partition.
//!
//! Thread-safe: one mutex over all transactions; markers are written under it, so two
//! requests for one transactional id never interleave.

pub mod records;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use runnel_core::{Clock, SystemClock};

use crate::coordinators::Host;
use crate::error::{BrokerError, ErrorCode};
use crate::storage::partition::{Appended, Partition};
use records::TxnValue;

pub use crate::storage::topics::TXN_TOPIC;

#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`
    pub max_timeout_ms: i32,
    /// `transaction.state.log.num.partitions`
    pub partitions: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    pub abort_check_interval_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            partitions: 50,
            abort_check_interval_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }
    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }
    /// Kafka's names, as DescribeTransactions and ListTransactions report them.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

impl TxnMetadata {
    fn value(&self) -> TxnValue {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in &self.partitions {
            by_topic.entry(t.clone()).or_default().push(*p);
        }
        TxnValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: by_topic.into_iter().collect(),
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
        }
    }
}

#[derive(Default)]
struct State {
    txns: HashMap<String, TxnMetadata>,
    by_producer: HashMap<i64, String>,
}

/// Where a state change was written, for the durability wait.
pub type Durable = Option<(Arc<Partition>, Appended)>;

pub struct TxnCoordinator {
    pub config: TxnConfig,
    state: Mutex<State>,
    /// The `__transaction_state` partitions this broker leads (and so the transactional
    /// ids it coordinates), with the topic's partition count.
    owned: parking_lot::RwLock<(BTreeSet<i32>, i32)>,
    offline: crate::coordinators::groups::OfflineCoordinatorPartitions,
    /// Timestamps and the timeout expiry read this clock (tests move a `ManualClock`).
    clock: Arc<dyn Clock>,
}

/// What ending a transaction still needs once its outcome is recorded.
enum Markers {
    /// Every marker is written: record Complete* now.
    Written,
    /// Markers are on their way to partition leaders (replicated mode); the sender
    /// records Complete* when every leader has them.
    Sending,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> BrokerError {
    BrokerError::new(code, msg)
}

/// Checks a request's producer id and epoch against the transaction's.
fn check_producer(m: &TxnMetadata, producer_id: i64, epoch: i16) -> Result<(), BrokerError> {
    if m.producer_id != producer_id {
        return Err(err(
            ErrorCode::InvalidProducerIdMapping,
            format!(
                "transactional id '{}' belongs to producer id {}, not {producer_id}",
                m.transactional_id, m.producer_id
            ),
        ));
    }
    if epoch < m.producer_epoch {
        return Err(err(
            ErrorCode::ProducerFenced,
            format!(
                "producer epoch {epoch} was fenced by epoch {}",
                m.producer_epoch
            ),
        ));
    }
    if epoch > m.producer_epoch {
        return Err(err(
            ErrorCode::InvalidProducerEpoch,
            format!(
                "producer epoch {epoch} is newer than the coordinator's {}",
                m.producer_epoch
            ),
        ));
    }
    Ok(())
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A coordinator whose timestamps and timeouts read `clock`.
    pub fn with_clock(config: TxnConfig, clock: Arc<dyn Clock>) -> Self {
        TxnCoordinator {
            clock,
            // Coordinates nothing until it leads `__transaction_state` partitions.
            owned: parking_lot::RwLock::new((BTreeSet::new(), config.partitions)),
            config,
            state: Mutex::new(State::default()),
            offline: Default::default(),
        }
    }

    /// NOT_COORDINATOR unless this broker leads the id's `__transaction_state` partition.
    /// COORDINATOR_NOT_AVAILABLE when that partition's files failed recovery.
    pub fn check_coordinator(&self, tid: &str) -> Result<(), BrokerError> {
        if self.offline.holds(tid) {
            return Err(err(
                ErrorCode::CoordinatorNotAvailable,
                format!("the __transaction_state partition of '{tid}' is offline"),
            ));
        }
        let (owned, count) = &*self.owned.read();
        if owned.contains(&crate::coordinators::groups::records::partition_for(
            tid, *count,
        )) {
            Ok(())
        } else {
            Err(err(
                ErrorCode::NotCoordinator,
                format!("this broker does not coordinate transactional id '{tid}'"),
            ))
        }
    }

    /// This broker became leader of `__transaction_state` partition `p` (load its
    /// transactional ids and finish what was prepared), or stopped leading it.
    pub fn on_leadership(&self, host: &impl Host, p: &Partition, partitions: i32, leader: bool) {
        {
            let mut owned = self.owned.write();
            let (set, count) = &mut *owned;
            *count = partitions;
            if leader {
                set.insert(p.index);
            } else {
                set.remove(&p.index);
            }
        }
        let mine = |tid: &str| {
            crate::coordinators::groups::records::partition_for(tid, partitions) == p.index
        };
        let mut state = self.state.lock();
        let gone: Vec<String> = state.txns.keys().filter(|t| mine(t)).cloned().collect();
        for tid in gone {
            if let Some(m) = state.txns.remove(&tid) {
                state.by_producer.remove(&m.producer_id);
            }
        }
        if !leader {
            tracing::info!(
                partition = p.index,
                "no longer coordinating the transactions of a __transaction_state partition"
            );
            return;
        }
        self.offline.note(p, partitions);
        if let Err(e) = replay_partition(&mut state, p) {
            tracing::error!(partition = p.index, error = %e, "cannot load transaction state");
            return;
        }
        let n = state.txns.keys().filter(|t| mine(t)).count();
        tracing::info!(
            partition = p.index,
            transactions = n,
            "coordinating the transactions of a __transaction_state partition"
        );
        self.finish_prepared(host, &mut state, |tid| mine(tid));
    }

    /// Finishes the transactions (chosen by `which`) a crash or a coordinator move left
    /// prepared: their outcome is decided, only the markers may be missing.
    fn finish_prepared(&self, host: &impl Host, state: &mut State, which: impl Fn(&str) -> bool) {
        let prepared: Vec<String> = state
            .txns
            .values()
            .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .map(|m| m.transactional_id.clone())
            .filter(|tid| which(tid))
            .collect();
        for tid in prepared {
            let m = state.txns.get(&tid).expect("listed above").clone();
            let commit = m.state == TxnState::PrepareCommit;
            tracing::info!(transactional_id = %tid, commit, "completing a prepared transaction");
            if let Markers::Written = self.write_markers(host, &m, m.producer_epoch, commit) {
                if let Err(e) = self.complete_locked(host, state, &tid, m.producer_id, commit) {
                    tracing::error!(transactional_id = %tid, error = %e, "could not record a completed transaction");
                }
            }
        }
    }

    /// Records Complete* for a prepared transaction whose markers are all written.
    fn complete_locked(
        &self,
        host: &impl Host,
        state: &mut State,
        tid: &str,
        producer_id: i64,
        commit: bool,
    ) -> Result<Durable, BrokerError> {
        let Some(m) = state.txns.get_mut(tid) else {
            return Ok(None);
        };
        let expected = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if m.producer_id != producer_id || m.state != expected {
            return Ok(None);
        }
        m.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.last_update_ms = self.clock.now_ms();
        let done = m.clone();
        Ok(Some(self.persist(host, &done)?))
    }

    /// Called by the marker sender once every partition leader has the markers.
    pub fn markers_written(&self, host: &impl Host, tid: &str, producer_id: i64, commit: bool) {
        let mut state = self.state.lock();
        if let Err(e) = self.complete_locked(host, &mut state, tid, producer_id, commit) {
            tracing::error!(transactional_id = %tid, error = %e, "could not record a completed transaction");
        }
    }

    fn persist(
        &self,
        host: &impl Host,
        m: &TxnMetadata,
    ) -> Result<(Arc<Partition>, Appended), BrokerError> {
        let topic = match host.topics().get(TXN_TOPIC) {
            Some(t) => t,
            None => {
                // Only the controller creates topics (FindCoordinator asks it).
                return Err(err(
                    ErrorCode::CoordinatorNotAvailable,
                    "__transaction_state does not exist yet",
                ));
            }
        };
        let index = crate::coordinators::groups::records::partition_for(
            &m.transactional_id,
            topic.partitions.len() as i32,
        ) as usize;
        let partition = topic.partitions[index].clone();
        let key = records::encode_key(&m.transactional_id);
        let value = records::encode_value(&m.value());
        let mut batch =
            runnel_log::batch::build_batch(&[(Some(&key), Some(&value))], self.clock.now_ms());
        let r = host.append_as_leader(&partition, |log, epoch| {
            log.append(&mut batch, epoch, self.clock.now_ms())
        })?;
        Ok((partition, Appended::after(&r)))
    }

    /// Writes a commit or abort marker to every partition of the transaction: the
    /// markers go to each partition's leader (this broker's own partitions take them in
    /// place, the others by WriteTxnMarkers, answered once replicated) from a background
    /// sender, which records Complete* when all landed.
    fn write_markers(
        &self,
        host: &impl Host,
        m: &TxnMetadata,
        epoch: i16,
        commit: bool,
    ) -> Markers {
        if m.partitions.is_empty() {
            return Markers::Written;
        }
        host.send_txn_markers(
            m.transactional_id.clone(),
            m.producer_id,
            epoch,
            commit,
            m.partitions.iter().cloned().collect(),
        );
        Markers::Sending
    }

    /// InitProducerId with a transactional id: a new producer id, or the existing one
    /// with a bumped epoch, fencing the previous producer and aborting its transaction.
    pub fn init_producer(
        &self,
        host: &impl Host,
        tid: &str,
        timeout_ms: i32,
        req_pid: i64,
        req_epoch: i16,
    ) -> Result<(i64, i16, Durable), BrokerError> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(err(ErrorCode::InvalidTransactionTimeout, format!("transaction timeout {timeout_ms} ms is outside 1..={} (transaction.max.timeout.ms)", self.config.max_timeout_ms)));
        }
        self.check_coordinator(tid)?;
        let mut state = self.state.lock();
        let now = self.clock.now_ms();
        let existing = state.txns.get(tid).cloned();
        let m = match existing {
            None => TxnMetadata {
                transactional_id: tid.to_string(),
                producer_id: host.allocate_producer_id()?,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now,
            },
            Some(mut m) => {
                if req_pid >= 0 && (req_pid != m.producer_id || req_epoch != m.producer_epoch) {
                    return Err(err(ErrorCode::ProducerFenced, format!("producer {req_pid} epoch {req_epoch} is not the current producer of '{tid}'")));
                }
                let new_epoch = m.producer_epoch.checked_add(1).filter(|e| *e < i16::MAX);
                if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                    // Markers of the previous transaction are still on their way.
                    return Err(err(
                        ErrorCode::ConcurrentTransactions,
                        format!("transaction '{tid}' is still completing; retry"),
                    ));
                }
                if m.state == TxnState::Ongoing {
                    // Fence the previous producer: its open transaction is aborted with the
                    // bumped epoch, so its late writes are refused everywhere it wrote.
                    // The abort is recorded first and its markers sent; the producer
                    // retries (CONCURRENT_TRANSACTIONS) until it completes.
                    let fence_epoch = new_epoch.unwrap_or(m.producer_epoch);
                    m.producer_epoch = fence_epoch;
                    m.state = TxnState::PrepareAbort;
                    m.last_update_ms = now;
                    self.persist(host, &m)?;
                    state.txns.insert(tid.to_string(), m.clone());
                    if let Markers::Written = self.write_markers(host, &m, fence_epoch, false) {
                        self.complete_locked(host, &mut state, tid, m.producer_id, false)?;
                    }
                    return Err(err(
                        ErrorCode::ConcurrentTransactions,
                        format!("aborting the open transaction of '{tid}'; retry"),
                    ));
                }
                match new_epoch {
                    Some(e) => m.producer_epoch = e,
                    None => {
                        state.by_producer.remove(&m.producer_id);
                        m.producer_id = host.allocate_producer_id()?;
                        m.producer_epoch = 0;
                    }
                }
                m.timeout_ms = timeout_ms;
                m.state = TxnState::Empty;
                m.partitions.clear();
                m.start_ms = -1;
                m.last_update_ms = now;
                m
            }
        };
        let durable = self.persist(host, &m)?;
        state.by_producer.insert(m.producer_id, tid.to_string());
        let result = (m.producer_id, m.producer_epoch, Some(durable));
        state.txns.insert(tid.to_string(), m);
        Ok(result)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, through the offsets topic partition).
    /// Returns one error code per partition.
    pub fn add_partitions(
        &self,
        host: &impl Host,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        verify_only: bool,
    ) -> Result<(Vec<ErrorCode>, Durable), BrokerError> {
        self.check_coordinator(tid)?;
        let mut state = self.state.lock();
        let m = state.txns.get_mut(tid).ok_or_else(|| {
            err(
                ErrorCode::InvalidProducerIdMapping,
                format!("transactional id '{tid}' is not known; call InitProducerId first"),
            )
        })?;
        check_producer(m, producer_id, epoch)?;
        if matches!(
            m.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        ) {
            return Err(err(
                ErrorCode::ConcurrentTransactions,
                "the previous transaction is still completing",
            ));
        }
        if verify_only {
            let codes = partitions
                .iter()
                .map(|p| {
                    if m.state == TxnState::Ongoing && m.partitions.contains(p) {
                        ErrorCode::None
                    } else {
                        ErrorCode::InvalidTxnState
                    }
                })
                .collect();
            return Ok((codes, None));
        }
        let unknown: Vec<bool> = partitions
            .iter()
            .map(|(t, p)| host.topics().partition(t, *p).is_none())
            .collect();
        if unknown.iter().any(|u| *u) {
            let codes = unknown
                .iter()
                .map(|u| {
                    if *u {
                        ErrorCode::UnknownTopicOrPartition
                    } else {
                        ErrorCode::OperationNotAttempted
                    }
                })
                .collect();
            return Ok((codes, None));
        }
        let mut changed = false;
        for p in partitions {
            changed |= m.partitions.insert(p.clone());
        }
        if m.state != TxnState::Ongoing {
            m.state = TxnState::Ongoing;
            m.start_ms = self.clock.now_ms();
            changed = true;
        }
        m.last_update_ms = self.clock.now_ms();
        let durable = if changed {
            let snapshot = m.clone();
            Some(self.persist(host, &snapshot)?)
        } else {
            None
        };
        Ok((vec![ErrorCode::None; partitions.len()], durable))
    }

    /// EndTxn: decide, write markers everywhere, complete.
    pub fn end_txn(
        &self,
        host: &impl Host,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<Durable, BrokerError> {
        self.check_coordinator(tid)?;
        let mut state = self.state.lock();
        let m = state.txns.get_mut(tid).ok_or_else(|| {
            err(
                ErrorCode::InvalidProducerIdMapping,
                format!("transactional id '{tid}' is not known"),
            )
        })?;
        check_producer(m, producer_id, epoch)?;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {}
            // A retried EndTxn whose first attempt completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(None),
            // Aborting with nothing added is allowed and does nothing.
            (TxnState::Empty, false) => return Ok(None),
            (s, _) => {
                return Err(err(
                    ErrorCode::InvalidTxnState,
                    format!(
                        "cannot {} a transaction in state {}",
                        if commit { "commit" } else { "abort" },
                        s.name()
                    ),
                ));
            }
        }
        m.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        m.last_update_ms = self.clock.now_ms();
        let prepared = m.clone();
        let prepare_written = self.persist(host, &prepared)?;
        match self.write_markers(host, &prepared, epoch, commit) {
            Markers::Written => {
                self.complete_locked(host, &mut state, tid, prepared.producer_id, commit)
            }
            // The outcome is decided once PrepareCommit/PrepareAbort is durable (Kafka
            // answers EndTxn then too); the sender finishes the markers.
            Markers::Sending => Ok(Some(prepare_written)),
        }
    }

    /// Produce-side check: a transactional batch may only go to a partition that was
    /// added to the ongoing transaction of the producer, under the transactional id the
    /// Produce request names (a producer id of another id is INVALID_PRODUCER_ID_MAPPING).
    pub fn verify_produce(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), BrokerError> {
        let state = self.state.lock();
        let Some(m) = state
            .by_producer
            .get(&producer_id)
            .and_then(|tid| state.txns.get(tid))
        else {
            // The coordinator is another broker (or this one no longer is); like Kafka
            // before KIP-890, the partition leader takes the producer's word (epochs
            // still fence zombies).
            return Ok(());
        };
        // Kafka's verification asks the coordinator about the request's transactional
        // id: a producer id of another transaction is not this one's to write.
        if m.transactional_id != transactional_id {
            return Err(err(
                ErrorCode::InvalidProducerIdMapping,
                format!(
                    "producer {producer_id} belongs to another transactional id than '{transactional_id}'"
                ),
            ));
        }
        check_producer(m, producer_id, epoch).map_err(|e| {
            if e.code == ErrorCode::ProducerFenced {
                err(ErrorCode::InvalidProducerEpoch, e.message)
            } else {
                e
            }
        })?;
        if m.state != TxnState::Ongoing || !m.partitions.contains(&(topic.to_string(), partition)) {
            return Err(err(
                ErrorCode::InvalidTxnState,
                format!(
                    "{topic}-{partition} was not added to transaction '{}'",
                    m.transactional_id
                ),
            ));
        }
        Ok(())
    }

    /// TxnOffsetCommit's check: the group's offsets partition is in the transaction.
    pub fn verify_offsets(
        &self,
        host: &impl Host,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), BrokerError> {
        let state = self.state.lock();
        let Some(m) = state.txns.get(tid) else {
            // The transaction coordinator is another broker (see verify_produce).
            return Ok(());
        };
        check_producer(m, producer_id, epoch)?;
        let partitions = host
            .topics()
            .get(crate::coordinators::groups::OFFSETS_TOPIC)
            .map_or(host.offsets_topic_partitions(), |t| {
                t.partitions.len() as i32
            });
        let p = crate::coordinators::groups::records::partition_for(group, partitions);
        if m.state != TxnState::Ongoing
            || !m
                .partitions
                .contains(&(crate::coordinators::groups::OFFSETS_TOPIC.to_string(), p))
        {
            return Err(err(
                ErrorCode::InvalidTxnState,
                format!("group '{group}' was not added to transaction '{tid}' (AddOffsetsToTxn)"),
            ));
        }
        Ok(())
    }

    /// Aborts transactions open longer than their timeout, fencing their producers.
    pub fn abort_timed_out(&self, host: &impl Host) {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        let expired: Vec<String> = state
            .txns
            .values()
            .filter(|m| m.state == TxnState::Ongoing && now - m.start_ms > m.timeout_ms as i64)
            .map(|m| m.transactional_id.clone())
            .collect();
        for tid in expired {
            let m = state.txns.get_mut(&tid).expect("listed above");
            let Some(fence_epoch) = m.producer_epoch.checked_add(1).filter(|e| *e < i16::MAX)
            else {
                continue;
            };
            tracing::info!(transactional_id = %tid, timeout_ms = m.timeout_ms, "aborting a transaction that timed out");
            m.producer_epoch = fence_epoch;
            m.state = TxnState::PrepareAbort;
            m.last_update_ms = now;
            let prepared = m.clone();
            if let Err(e) = self.persist(host, &prepared) {
                tracing::error!(transactional_id = %tid, error = %e, "could not record the timeout abort");
                continue;
            }
            if let Markers::Written = self.write_markers(host, &prepared, fence_epoch, false) {
                if let Err(e) =
                    self.complete_locked(host, &mut state, &tid, prepared.producer_id, false)
                {
                    tracing::error!(transactional_id = %tid, error = %e, "could not record the completed abort");
                }
            }
        }
    }

    pub fn describe(&self, tid: &str) -> Option<TxnMetadata> {
        self.state.lock().txns.get(tid).cloned()
    }

    pub fn list(&self) -> Vec<TxnMetadata> {
        let mut all: Vec<TxnMetadata> = self.state.lock().txns.values().cloned().collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }
}

/// Replays one `__transaction_state` partition into `state`.
fn replay_partition(state: &mut State, p: &Partition) -> Result<(), BrokerError> {
    if p.storage_offline {
        tracing::error!(topic = %p.topic, partition = p.index, "not replaying an offline partition: its transactional ids answer COORDINATOR_NOT_AVAILABLE");
        return Ok(());
    }
    p.log.lock().for_each_batch(|h, batch| {
        let read = runnel_log::batch::for_each_record(batch, |r| {
            let Some(tid) = r.key.and_then(records::decode_key) else {
                return;
            };
            match r.value.and_then(records::decode_value) {
                Some(v) => {
                    state.by_producer.insert(v.producer_id, tid.clone());
                    state.txns.insert(
                        tid.clone(),
                        TxnMetadata {
                            transactional_id: tid,
                            producer_id: v.producer_id,
                            producer_epoch: v.producer_epoch,
                            timeout_ms: v.timeout_ms,
                            state: v.state,
                            partitions: v
                                .partitions
                                .into_iter()
                                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                                .collect(),
                            start_ms: v.start_ms,
                            last_update_ms: v.last_update_ms,
                        },
                    );
                }
                None => {
                    state.txns.remove(&tid);
                }
            }
        });
        crate::coordinators::groups::skip_unreadable(p, h, read);
        Ok::<(), BrokerError>(())
    })
}
