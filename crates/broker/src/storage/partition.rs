//! One partition this broker holds: its log behind a mutex, its replica state (leader or
//! follower, ISR, high watermark), the group-commit machinery that makes acks=all
//! wait for an fdatasync shared by concurrent producers, and the fetches parked on it.
//!
//! Every write goes through `append_as_leader`, `append_as_follower` or (a mirror topic
//! of a cluster link, `crate::mirror`) `append_as_mirror`, which apply the policy once:
//! the leadership check under the log lock, the high-watermark advance and the wake-up
//! of the fetches parked on this partition (consumers and followers alike). A mirror
//! partition refuses `append_as_leader` until its topic is promoted.
//!
//! Lock order: `log` before `replica` before `waiters` (and `mirror_of`, taken only under
//! `log`); none of them is held across an await.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use runnel_log::{LogError, PartitionLog};
use tokio::sync::{watch, Notify};

use crate::storage::log_dirs::LogDirs;
use crate::storage::replication::ReplicaState;

/// What a client writing to a mirror topic is told. INVALID_REQUEST (Kafka's choice for
/// a request the broker will never accept in its current state; non-retriable, so a
/// producer fails at once instead of retrying until its delivery timeout).
pub fn read_only_error(link: &str) -> crate::error::BrokerError {
    crate::error::BrokerError::new(
        crate::error::ErrorCode::InvalidRequest,
        format!(
            "this topic is a mirror of cluster link '{link}' and is read-only until promoted (runnel links promote {link} --topic TOPIC)"
        ),
    )
}

/// Thread-safe: the log is behind a mutex held only for the duration of one call.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Mutex<PartitionLog>,
    /// The epoch stamped on batches this broker appends as leader.
    leader_epoch: AtomicI32,
    /// Who leads, who is in sync, and (on the leader) what each follower has.
    pub replica: Mutex<ReplicaState>,
    /// The high watermark (leader: the smallest log end in the
    /// ISR; follower: the leader's, capped by the local log end).
    high_watermark: watch::Sender<i64>,
    /// Log end offset up to which data has been fdatasynced.
    durable: watch::Sender<i64>,
    flush_wanted: Notify,
    closed: AtomicBool,
    /// The log's files failed recovery at open: the partition answers
    /// KAFKA_STORAGE_ERROR until a restart finds them repaired.
    pub storage_offline: bool,
    /// Fetches parked on this partition (Kafka's delayed-fetch purgatory, keyed by
    /// partition): woken when its log end or high watermark moves, or its role changes.
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// The cluster link this partition mirrors (`crate::mirror`): written only by
    /// `append_as_mirror` while set. Changed under the log lock.
    mirror_of: Mutex<Option<Arc<str>>>,
    /// The broker's failed log dirs: a partition on one refuses writes, and an I/O
    /// error here takes its dir offline.
    log_dirs: Arc<LogDirs>,
}

/// A leader's append to wait on (acks=all, a coordinator's write): everything below
/// `end`, written while this broker led the partition in `leader_epoch`. Only an
/// acknowledgement in that same epoch counts (see `Partition::wait_replicated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub end: i64,
    pub leader_epoch: i32,
}

impl Appended {
    /// Everything up to `r`'s last offset, in the epoch it was written (or, for a
    /// retried batch, answered) under.
    pub fn after(r: &runnel_log::AppendResult) -> Self {
        Self {
            end: r.last_offset + 1,
            leader_epoch: r.leader_epoch,
        }
    }
}

/// Why a leader append was refused.
#[derive(Debug)]
pub enum AppendError {
    /// This broker does not lead the partition (checked under the log lock).
    NotLeader,
    /// The partition's files failed recovery, or its log dir failed.
    Offline,
    /// The partition belongs to a mirror topic of this cluster link: read-only for
    /// clients until promoted.
    Mirror(Arc<str>),
    Log(LogError),
}

impl From<AppendError> for crate::error::BrokerError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::NotLeader => crate::error::BrokerError::new(
                crate::error::ErrorCode::NotLeaderOrFollower,
                "this broker is not the partition's leader",
            ),
            AppendError::Offline => crate::error::BrokerError::new(
                crate::error::ErrorCode::KafkaStorageError,
                "the partition is on a failed log dir",
            ),
            AppendError::Mirror(link) => read_only_error(&link),
            AppendError::Log(e) => e.into(),
        }
    }
}

impl Partition {
    /// A new partition leads nothing (NOT_LEADER_OR_FOLLOWER to every client) until the
    /// metadata image says otherwise: a restarted broker must not take writes for what it
    /// led before it died.
    pub fn new(topic: &str, index: i32, log: PartitionLog, log_dirs: Arc<LogDirs>) -> Arc<Self> {
        let end = log.log_end_offset();
        let storage_offline = log.offline_reason().is_some();
        let (durable, _) = watch::channel(end);
        let (high_watermark, _) = watch::channel(0);
        let p = Arc::new(Partition {
            topic: topic.to_string(),
            index,
            log: Mutex::new(log),
            leader_epoch: AtomicI32::new(0),
            replica: Mutex::new(ReplicaState {
                leader: runnel_meta::image::NO_LEADER,
                ..ReplicaState::default()
            }),
            high_watermark,
            durable,
            flush_wanted: Notify::new(),
            closed: AtomicBool::new(false),
            storage_offline,
            waiters: Mutex::new(Vec::new()),
            mirror_of: Mutex::new(None),
            log_dirs,
        });
        tokio::spawn(group_commit_loop(p.clone()));
        p
    }

    /// Stops the group-commit task (the partition is being closed or deleted).
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
        self.wake();
    }

    /// Parks a fetch on this partition until the next `wake`. Register before reading:
    /// a wake between the read and the wait leaves a permit, so nothing is missed.
    pub fn park(&self, waiter: &Arc<Notify>) {
        let mut waiters = self.waiters.lock();
        // Fetches that finished without a wake from here hold no other reference.
        waiters.retain(|w| Arc::strong_count(w) > 1);
        if !waiters.iter().any(|w| Arc::ptr_eq(w, waiter)) {
            waiters.push(waiter.clone());
        }
    }

    /// Wakes every fetch parked on this partition.
    pub fn wake(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for w in waiters {
            w.notify_one();
        }
    }

    /// The one way to write to this partition as its leader (produce, coordinator
    /// records, transaction markers). `write` runs under the log lock with the leader
    /// epoch to stamp, after the leadership check, so a leader change (which takes the
    /// same lock) cannot interleave; then the high watermark advances and parked fetches
    /// (followers, and consumers on a single node) are woken. A mirror partition refuses
    /// (`AppendError::Mirror`): only `append_as_mirror` writes it until it is promoted.
    pub fn append_as_leader<T>(
        &self,
        write: impl FnOnce(&mut PartitionLog, i32) -> Result<T, LogError>,
    ) -> Result<T, AppendError> {
        self.append_checked(
            |mirror_of| match mirror_of {
                Some(link) => Err(AppendError::Mirror(link.clone())),
                None => Ok(()),
            },
            write,
        )
    }

    /// The one way to write to a mirror partition (`crate::mirror`): `write` runs under
    /// the log lock with the leader epoch to stamp, only while this broker leads the
    /// partition and it still mirrors `link` (checked under the lock, which promotion
    /// also takes, so no mirrored batch lands after a client's write). Batches keep the
    /// source's offsets; then, as for a leader append, the high watermark advances and
    /// parked fetches wake. `Err(NotLeader)`/`Err(Mirror)` mean: stop mirroring here.
    pub fn append_as_mirror<T>(
        &self,
        link: &str,
        write: impl FnOnce(&mut PartitionLog, i32) -> Result<T, LogError>,
    ) -> Result<T, AppendError> {
        self.append_checked(
            |mirror_of| match mirror_of {
                Some(l) if &**l == link => Ok(()),
                other => Err(AppendError::Mirror(
                    other.cloned().unwrap_or_else(|| Arc::from("")),
                )),
            },
            write,
        )
    }

    /// A leader-side append: under the log lock, the leadership check and `allowed` (on
    /// the partition's mirror link), then `write`; then the high watermark advances and
    /// parked fetches wake.
    fn append_checked<T>(
        &self,
        allowed: impl FnOnce(Option<&Arc<str>>) -> Result<(), AppendError>,
        write: impl FnOnce(&mut PartitionLog, i32) -> Result<T, LogError>,
    ) -> Result<T, AppendError> {
        let written = {
            let mut log = self.log.lock();
            if self.offline_under(&log) {
                return Err(AppendError::Offline);
            }
            if !self.replica.lock().is_leader() {
                return Err(AppendError::NotLeader);
            }
            allowed(self.mirror_of.lock().as_ref())?;
            write(&mut log, self.leader_epoch()).map_err(|e| {
                self.note_error_under(&log, &e);
                AppendError::Log(e)
            })?
        };
        crate::storage::replication::maybe_advance_high_watermark(self);
        self.wake();
        Ok(written)
    }

    /// Whether the partition is offline: its files failed recovery, or its log dir
    /// failed.
    pub fn is_offline(&self) -> bool {
        // The log lock only when some dir failed: fetches ask this per partition, and a
        // caller may hold the replica lock (which comes after the log lock).
        self.storage_offline
            || (self.log_dirs.any_offline() && self.offline_under(&self.log.lock()))
    }

    fn offline_under(&self, log: &PartitionLog) -> bool {
        self.storage_offline
            || (self.log_dirs.any_offline()
                && log
                    .dir()
                    .parent()
                    .is_some_and(|d| self.log_dirs.is_offline(d)))
    }

    /// Takes the partition's log dir offline after an I/O error (reads call this; the
    /// write paths do it themselves).
    pub fn note_storage_error(&self, e: &LogError) {
        self.note_error_under(&self.log.lock(), e);
    }

    fn note_error_under(&self, log: &PartitionLog, e: &LogError) {
        if let Some(dir) = log.dir().parent() {
            self.log_dirs.note_error(dir, e);
        }
    }

    /// The cluster link this partition mirrors, if any.
    pub fn mirror_of(&self) -> Option<Arc<str>> {
        self.mirror_of.lock().clone()
    }

    /// Makes the partition a mirror of `link` (None: an ordinary, writable partition),
    /// under the log lock so that no append straddles the change.
    pub fn set_mirror_of(&self, link: Option<Arc<str>>) {
        let _log = self.log.lock();
        *self.mirror_of.lock() = link;
    }

    /// The one way to write to this partition as a follower: `records` copied byte for
    /// byte from the leader, then the leader's log start and high watermark (capped by
    /// the local log end) taken over. Wakes parked fetches.
    ///
    /// `fetched_under` is the leader epoch the fetch was sent with. A fetch answered
    /// after this broker became leader, or moved to another leader, is dropped
    /// (`Ok(false)`): checked under the log lock, which a role change also takes, so a
    /// stale response never lands in a leader's log or after a truncation.
    pub fn append_as_follower(
        &self,
        fetched_under: i32,
        records: &[u8],
        leader_log_start: i64,
        leader_high_watermark: i64,
        now_ms: i64,
    ) -> Result<bool, LogError> {
        let end = {
            let mut log = self.log.lock();
            {
                let r = self.replica.lock();
                if r.is_leader() || self.leader_epoch() != fetched_under {
                    return Ok(false);
                }
            }
            if !records.is_empty() {
                if let Err(e) = log.append_replicated(records, now_ms) {
                    self.note_error_under(&log, &e);
                    return Err(e);
                }
            }
            let end = log.log_end_offset();
            if leader_log_start > log.log_start_offset() {
                let _ = log.delete_records_before(leader_log_start.min(end));
            }
            end
        };
        self.set_high_watermark(leader_high_watermark.min(end));
        if !records.is_empty() {
            self.wake();
        }
        Ok(true)
    }

    /// The offset below which consumers may read: what every in-sync replica has (on a
    /// single node, whose ISR is itself, the log end).
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Like `high_watermark`, for callers that already hold the log lock.
    pub fn high_watermark_with(&self, log: &PartitionLog) -> i64 {
        (*self.high_watermark.borrow()).min(log.log_end_offset())
    }

    pub(crate) fn high_watermark_ref(&self) -> watch::Ref<'_, i64> {
        self.high_watermark.borrow()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub(crate) fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    /// Moves the high watermark forward (never back); true if it moved.
    pub(crate) fn advance_high_watermark(&self, to: i64) -> bool {
        let moved = self.high_watermark.send_if_modified(|hw| {
            let moved = to > *hw;
            if moved {
                *hw = to;
            }
            moved
        });
        if moved {
            // Consumers long-polling for the newly committed records may read them now.
            self.wake();
        }
        moved
    }

    /// Sets the high watermark outright (a follower copying its leader's, or a reset);
    /// true if it changed. Wakes the fetches parked here when it did.
    pub(crate) fn set_high_watermark(&self, to: i64) -> bool {
        let moved = self.high_watermark.send_if_modified(|hw| {
            let moved = to != *hw;
            *hw = to;
            moved
        });
        if moved {
            self.wake();
        }
        moved
    }

    /// A coordinator's own write (offsets, group or transaction state) counts once it is
    /// on disk and, in a cluster, in every in-sync replica: KAFKA_STORAGE_ERROR,
    /// NOT_LEADER_OR_FOLLOWER or REQUEST_TIMED_OUT otherwise.
    pub async fn wait_acknowledged(&self, at: Appended) -> Result<(), crate::error::ErrorCode> {
        self.wait_durable(at.end)
            .await
            .map_err(|_| crate::error::ErrorCode::KafkaStorageError)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        self.wait_replicated(at, deadline)
            .await
            .map_err(|code| match code {
                // The coordinator lost its partition: the client finds the new one.
                crate::error::ErrorCode::NotLeaderOrFollower => {
                    crate::error::ErrorCode::NotCoordinator
                }
                other => other,
            })
    }

    /// Waits until the high watermark reaches `at.end` while this broker still leads the
    /// partition in the epoch the append was made in. Err: NOT_LEADER_OR_FOLLOWER once it
    /// stopped leading or led again in a newer epoch, timeout once `deadline` passes.
    ///
    /// The epoch is what makes the answer true. A leader that was paused or cut off
    /// becomes a follower, truncates its unreplicated tail (this batch with it) and copies
    /// the new leader's records into the same offsets, and its high watermark then passes
    /// `at.end` as a follower's: counting that would acknowledge records that are gone.
    /// The epoch is read after the watermark, and a role change sets it (under the log
    /// lock) before any follower fetch can move the watermark, so a watermark that moved
    /// for a follower is always seen with the new epoch.
    pub async fn wait_replicated(
        &self,
        at: Appended,
        deadline: tokio::time::Instant,
    ) -> Result<(), crate::error::ErrorCode> {
        let mut rx = self.high_watermark.subscribe();
        loop {
            let hw = *rx.borrow_and_update();
            if !self.replica.lock().is_leader() || self.leader_epoch() != at.leader_epoch {
                return Err(crate::error::ErrorCode::NotLeaderOrFollower);
            }
            if hw >= at.end {
                return Ok(());
            }
            // Re-check leadership now and then: losing it does not move the watermark.
            let tick = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return Err(crate::error::ErrorCode::NotLeaderOrFollower);
                },
                _ = tokio::time::sleep_until(tick.min(deadline)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(crate::error::ErrorCode::RequestTimedOut);
                    }
                }
            }
        }
    }

    /// Waits until everything below `offset` is on disk. Concurrent waiters share one
    /// fdatasync: the flusher syncs once for all requests that arrived while it worked.
    pub async fn wait_durable(&self, offset: i64) -> Result<(), LogError> {
        let mut rx = self.durable.subscribe();
        loop {
            let durable = *rx.borrow_and_update();
            if durable >= offset {
                return Ok(());
            }
            if durable < 0 {
                return Err(LogError::Io {
                    path: format!("{}-{}", self.topic, self.index),
                    source: std::io::Error::other("fdatasync failed"),
                });
            }
            self.flush_wanted.notify_one();
            if rx.changed().await.is_err() {
                return Err(LogError::Io {
                    path: format!("{}-{}", self.topic, self.index),
                    source: std::io::Error::other("partition closed"),
                });
            }
        }
    }
}

/// One fdatasync per round, covering every append that happened before it started.
/// A failed fdatasync poisons the partition's durability for good (waiters get errors):
/// after a failed fsync the kernel may have dropped dirty pages, so later successes
/// prove nothing about earlier data.
async fn group_commit_loop(p: Arc<Partition>) {
    loop {
        p.flush_wanted.notified().await;
        if p.closed.load(Ordering::Acquire) {
            return;
        }
        let (end, file) = {
            let log = p.log.lock();
            (log.log_end_offset(), log.active_file())
        };
        let Some(file) = file else {
            continue; // an offline partition takes no writes, so has nothing to sync
        };
        let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
        match synced {
            Ok(Ok(())) => {
                p.durable.send_if_modified(|d| {
                    let advanced = *d >= 0 && end > *d;
                    if advanced {
                        *d = end;
                    }
                    advanced
                });
            }
            _ => {
                tracing::error!(topic = %p.topic, partition = p.index, "fdatasync failed; acks=all producers get an error");
                p.durable.send_replace(-1);
            }
        }
    }
}
