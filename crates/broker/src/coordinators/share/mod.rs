//! Share groups (KIP-932): queues on Kafka topics.
//!
//! - `group.rs`: the share-group coordinator's membership and assignment
//!   (ShareGroupHeartbeat, ShareGroupDescribe); lives on the group's coordinator.
//! - `partition_state.rs`: one share-partition's record states, delivery counts and
//!   acquisition locks; lives on the partition's leader.
//! - `session.rs`: the share session cache (ShareFetch/ShareAcknowledge epochs).
//! - `config.rs`: the broker's `group.share.*` keys.
//!
//! `Shares` owns all of it for one broker. Thread-safe: each map is behind its own
//! mutex, and each share-partition behind its own. Lock order: `groups`, then
//! `sessions`, then `partitions` (the map), then one share-partition; the partition's
//! log lock is taken inside a share-partition's lock, never the other way round.
//!
//! - `records.rs` / `persist.rs`: `__share_group_state` in Kafka's record format, written
//!   after acknowledgements and releases, replayed at start-up.
//!
//! Membership and share sessions are in memory; share-partition state is persisted and
//! rebuilt when leadership moves (see `persist.rs` and ARCHITECTURE.md).

pub mod config;
pub mod group;
pub mod partition_state;
pub mod persist;
pub mod records;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::storage::partition::Partition;
pub use config::ShareConfig;
use partition_state::{AcquiredRange, Limits, SharePartitionState};

/// (group id, topic id, partition).
pub type SharePartitionKey = (String, Uuid, i32);

/// How long a member that left its group (a ShareGroupHeartbeat with epoch -1) keeps its
/// share session and acquired records here, so that its closing ShareAcknowledge, which
/// a client may send alongside the leave (librdkafka does), still lands. Kafka's
/// partition leaders learn of a leave only when the share session closes or its
/// connection drops; this bound stands in for the dropped connection.
const LEFT_MEMBER_GRACE: Duration = Duration::from_secs(10);

pub struct Shares {
    pub config: ShareConfig,
    groups: Mutex<HashMap<String, group::ShareGroup>>,
    sessions: Mutex<session::ShareSessions>,
    partitions: Mutex<HashMap<SharePartitionKey, Arc<Mutex<SharePartitionState>>>>,
    /// Snapshots replayed from `__share_group_state`, taken when a share-partition is
    /// first used after a restart.
    restored: Mutex<HashMap<SharePartitionKey, records::StateValue>>,
    /// Members that left while they had a share session here: (group, member) -> when.
    /// Their session and records go after `LEFT_MEMBER_GRACE` unless closed before.
    left: Mutex<HashMap<(String, String), Instant>>,
}

/// What one acquisition produced for one partition: the batches to send and the
/// acquired ranges within them.
#[derive(Default)]
pub struct Acquired {
    pub records: Bytes,
    pub ranges: Vec<AcquiredRange>,
}

/// A share group as ShareGroupDescribe and the admin tools show it.
pub struct GroupView {
    pub state: &'static str,
    pub epoch: i32,
    pub members: Vec<(String, group::Member)>,
}

/// Where a share-partition's start offset goes when it is first used
/// (`share.auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    Earliest,
    Latest,
    /// The first record at most this long ago.
    ByDuration(Duration),
}

impl AutoOffsetReset {
    /// Parses a (validated) group config value; anything unreadable is Kafka's default.
    pub fn parse(value: Option<&str>) -> Self {
        let v = value.unwrap_or("latest").trim().to_ascii_lowercase();
        match v.as_str() {
            "earliest" => AutoOffsetReset::Earliest,
            v => match v.strip_prefix("by_duration:").and_then(parse_iso_duration) {
                Some(d) => AutoOffsetReset::ByDuration(d),
                None => AutoOffsetReset::Latest,
            },
        }
    }
}

/// An ISO-8601 duration as Java's `Duration.parse` reads it: `PnDTnHnMn.nS`.
fn parse_iso_duration(s: &str) -> Option<Duration> {
    let s = s.trim().strip_prefix('p')?;
    let (days, time) = match s.split_once('t') {
        Some((d, t)) => (d, t),
        None => (s, ""),
    };
    let mut total = 0f64;
    if !days.is_empty() {
        total += days.strip_suffix('d')?.parse::<f64>().ok()? * 86_400.0;
    }
    let mut num = String::new();
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'h' | 'm' | 's' => {
                let n: f64 = num.parse().ok()?;
                num.clear();
                total += n * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
            }
            _ => return None,
        }
    }
    (num.is_empty() && total >= 0.0 && total.is_finite()).then(|| Duration::from_secs_f64(total))
}

impl Shares {
    pub fn new(config: ShareConfig) -> Self {
        Shares {
            config,
            groups: Mutex::new(HashMap::new()),
            sessions: Mutex::new(session::ShareSessions::default()),
            partitions: Mutex::new(HashMap::new()),
            restored: Mutex::new(HashMap::new()),
            left: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the state replayed from `__share_group_state` (at start-up).
    pub fn restore_from(&self, snapshots: HashMap<SharePartitionKey, records::StateValue>) {
        *self.restored.lock() = snapshots;
    }

    /// Whether `group_id` is a share group this broker coordinates.
    pub fn has_group(&self, group_id: &str) -> bool {
        self.groups.lock().contains_key(group_id)
    }

    /// Whether `member` is in `group` (None: this broker does not know the group). A
    /// member that left but still has a share session here counts until the session
    /// closes or its grace ends.
    pub fn is_member(&self, group_id: &str, member: &str) -> Option<bool> {
        let in_group = self
            .groups
            .lock()
            .get(group_id)
            .map(|g| g.members.contains_key(member))?;
        Some(in_group || self.sessions.lock().contains(group_id, member))
    }

    /// One ShareGroupHeartbeat. A member that leaves keeps its share session and records
    /// here for `LEFT_MEMBER_GRACE` (its closing ShareAcknowledge may follow the leave);
    /// without a session it holds nothing.
    pub fn heartbeat(
        &self,
        group_id: &str,
        params: group::HeartbeatParams<'_>,
        resolve: &dyn Fn(&str) -> Option<(Uuid, i32)>,
    ) -> group::HeartbeatResult {
        let member = params.member_id.to_string();
        let leaving = params.member_epoch == -1;
        let r = {
            let mut groups = self.groups.lock();
            let g = groups.entry(group_id.to_string()).or_default();
            group::heartbeat(g, params, Instant::now(), resolve)
        };
        if leaving && r.error == ErrorCode::None && self.sessions.lock().contains(group_id, &member)
        {
            self.left
                .lock()
                .insert((group_id.to_string(), member), Instant::now());
        }
        r
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let groups = self.groups.lock();
        let g = groups.get(group_id)?;
        Some(GroupView {
            state: g.state(),
            epoch: g.epoch,
            members: g
                .members
                .iter()
                .map(|(id, m)| (id.clone(), m.clone()))
                .collect(),
        })
    }

    /// Every share group: (id, state).
    pub fn list(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<_> = self
            .groups
            .lock()
            .iter()
            .map(|(id, g)| (id.clone(), g.state()))
            .collect();
        out.sort();
        out
    }

    /// Deletes an empty share group and its share-partition state (DeleteGroups);
    /// returns the share-partitions whose persisted state must be removed too.
    pub fn delete_group(
        &self,
        group_id: &str,
    ) -> Option<Result<Vec<SharePartitionKey>, ErrorCode>> {
        let mut groups = self.groups.lock();
        let g = groups.get(group_id)?;
        if !g.members.is_empty() {
            return Some(Err(ErrorCode::NonEmptyGroup));
        }
        groups.remove(group_id);
        drop(groups);
        let mut gone: Vec<SharePartitionKey> = Vec::new();
        self.partitions.lock().retain(|k, _| {
            let keep = k.0 != group_id;
            if !keep {
                gone.push(k.clone());
            }
            keep
        });
        self.restored.lock().retain(|k, _| {
            let keep = k.0 != group_id;
            if !keep {
                gone.push(k.clone());
            }
            keep
        });
        Some(Ok(gone))
    }

    /// The groups that have share-partition state here, sorted.
    pub fn group_ids_with_partitions(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.partitions.lock().keys().map(|k| k.0.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every share-partition of `group_id` with its summary, sorted.
    pub fn partitions_of(&self, group_id: &str) -> Vec<((Uuid, i32), partition_state::Summary)> {
        let entries: Vec<_> = self
            .partitions
            .lock()
            .iter()
            .filter(|(k, _)| k.0 == group_id)
            .map(|(k, v)| ((k.1, k.2), v.clone()))
            .collect();
        let mut out: Vec<_> = entries
            .into_iter()
            .map(|(k, v)| (k, v.lock().summary()))
            .collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// The share-partition state, created on first use (from its persisted snapshot,
    /// if it has one).
    pub fn partition(&self, key: &SharePartitionKey) -> Arc<Mutex<SharePartitionState>> {
        let mut partitions = self.partitions.lock();
        if let Some(sp) = partitions.get(key) {
            return sp.clone();
        }
        let mut state = SharePartitionState::new();
        if let Some(v) = self.restored.lock().remove(key) {
            state.restore(v.start_offset, &v.batches);
            state.snapshot_epoch = v.snapshot_epoch;
            state.leader_epoch = Some(v.leader_epoch);
        }
        let sp = Arc::new(Mutex::new(state));
        partitions.insert(key.clone(), sp.clone());
        sp
    }

    /// Whether `group_id` is a share group here: it has members, or share-partition
    /// state (live or persisted).
    pub fn knows_group(&self, group_id: &str) -> bool {
        self.has_group(group_id)
            || self.partitions.lock().keys().any(|k| k.0 == group_id)
            || self.restored.lock().keys().any(|k| k.0 == group_id)
    }

    /// Whether the share group has members (admins may change its offsets only when
    /// it has none, as in Kafka).
    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .lock()
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// The start offset of every initialized share-partition of `group_id`, live or
    /// persisted, sorted.
    pub fn start_offsets(&self, group_id: &str) -> Vec<(SharePartitionKey, i64)> {
        let mut out: Vec<(SharePartitionKey, i64)> = self
            .restored
            .lock()
            .iter()
            .filter(|(k, _)| k.0 == group_id)
            .map(|(k, v)| (k.clone(), v.start_offset))
            .collect();
        let live: Vec<_> = self
            .partitions
            .lock()
            .iter()
            .filter(|(k, _)| k.0 == group_id)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, sp) in live {
            let sp = sp.lock();
            if sp.is_initialized() {
                out.push((k, sp.start_offset()));
            }
        }
        out.sort();
        out
    }

    /// Forgets a share-partition (DeleteShareGroupOffsets): its next use starts from
    /// `share.auto.offset.reset`. Returns whether there was state to forget.
    pub fn forget_partition(&self, key: &SharePartitionKey) -> bool {
        let live = self.partitions.lock().remove(key).is_some();
        let persisted = self.restored.lock().remove(key).is_some();
        live || persisted
    }

    /// An existing share-partition state.
    pub fn existing_partition(
        &self,
        key: &SharePartitionKey,
    ) -> Option<Arc<Mutex<SharePartitionState>>> {
        self.partitions.lock().get(key).cloned()
    }

    /// The limits for a group's share-partitions: the broker's, with the group's
    /// `share.record.lock.duration.ms` override if it has one.
    pub fn limits(&self, lock_duration_override_ms: Option<i32>) -> Limits {
        Limits {
            delivery_count_limit: self.config.delivery_count_limit as i16,
            max_in_flight: self.config.partition_max_record_locks as i64,
            lock_duration_ms: lock_duration_override_ms
                .unwrap_or(self.config.record_lock_duration_ms)
                .max(1) as i64,
        }
    }

    pub fn session_fetch(
        &self,
        key: session::SessionKey,
        epoch: i32,
        added: &[session::PartitionId],
        forgotten: &[session::PartitionId],
    ) -> Result<session::Step, ErrorCode> {
        let max = self.config.max_share_sessions.max(0) as usize;
        self.sessions
            .lock()
            .fetch(key, epoch, added, forgotten, max)
    }

    pub fn session_acknowledge(
        &self,
        key: session::SessionKey,
        epoch: i32,
    ) -> Result<session::Step, ErrorCode> {
        self.sessions.lock().acknowledge(key, epoch)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Releases what `member` holds in `partitions` of `group_id` (its session closed
    /// or forgot them). Returns the partitions where something was released.
    pub fn release(
        &self,
        group_id: &str,
        member: &str,
        partitions: &[session::PartitionId],
        limits: &Limits,
    ) -> Vec<session::PartitionId> {
        partitions
            .iter()
            .filter(|(t, p)| {
                self.existing_partition(&(group_id.to_string(), *t, *p))
                    .is_some_and(|sp| sp.lock().release_member(member, limits) > 0)
            })
            .copied()
            .collect()
    }

    /// A member left or expired: its session closes and its records everywhere here are
    /// released. Returns the partitions where something was released.
    pub fn forget_member(&self, group_id: &str, member: &str) -> Vec<session::PartitionId> {
        self.sessions.lock().remove_member(group_id, member);
        let parts: Vec<session::PartitionId> = self
            .partitions
            .lock()
            .keys()
            .filter(|k| k.0 == group_id)
            .map(|k| (k.1, k.2))
            .collect();
        // Lock duration does not matter for a release.
        let limits = self.limits(None);
        self.release(group_id, member, &parts, &limits)
    }

    /// Completes the initialization of newly subscribed topics, expires silent members
    /// (releasing their records), left members past their grace, and acquisition locks.
    /// Returns
    /// the partitions where records became available again, so their parked share
    /// fetches can be woken.
    pub fn tick(&self) -> Vec<SharePartitionKey> {
        let now = Instant::now();
        let expired: Vec<(String, String)> = {
            let mut groups = self.groups.lock();
            groups
                .values_mut()
                .for_each(group::ShareGroup::finish_initializing);
            groups
                .iter_mut()
                .flat_map(|(id, g)| {
                    group::expire(g, now)
                        .into_iter()
                        .map(move |m| (id.clone(), m))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let mut woken = Vec::new();
        for (g, m) in expired {
            tracing::info!(group = %g, member = %m, "share-group member removed: no heartbeat within its session timeout");
            let released = self.forget_member(&g, &m);
            woken.extend(released.into_iter().map(|(t, p)| (g.clone(), t, p)));
        }
        let gone: Vec<(String, String)> = {
            let mut left = self.left.lock();
            let gone = left
                .iter()
                .filter(|(_, at)| now.duration_since(**at) >= LEFT_MEMBER_GRACE)
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>();
            for k in &gone {
                left.remove(k);
            }
            gone
        };
        for (g, m) in gone {
            // Still in the group means it rejoined under the same id: it keeps its session.
            if self
                .groups
                .lock()
                .get(&g)
                .is_some_and(|x| x.members.contains_key(&m))
            {
                continue;
            }
            let released = self.forget_member(&g, &m);
            woken.extend(released.into_iter().map(|(t, p)| (g.clone(), t, p)));
        }
        let now_ms = runnel_core::clock::now_ms();
        let entries: Vec<_> = self
            .partitions
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let limits = self.limits(None);
        for (k, sp) in entries {
            let mut sp = sp.lock();
            if sp.next_lock_deadline_ms().is_some_and(|d| d <= now_ms)
                && sp.expire_locks(now_ms, &limits) > 0
            {
                woken.push(k);
            }
        }
        woken
    }
}

/// How a share group reads its partitions (its group configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPolicy {
    /// `share.auto.offset.reset`.
    pub reset: AutoOffsetReset,
    /// `share.isolation.level=read_committed`: nothing at or past the last stable
    /// offset is handed out, and the data of aborted transactions is archived.
    pub read_committed: bool,
}

/// Acquires records of `p` for `member` from its share-partition `sp`: first records
/// whose delivery can be retried (released, or their lock expired), else new records
/// below the high watermark (read_committed: the last stable offset), whole batches, at
/// most about `max_records` (a batch is never split, as in Kafka's default
/// `batch_optimized` acquire mode) and never beyond the in-flight limit.
pub fn acquire(
    p: &Partition,
    sp: &mut SharePartitionState,
    member: &Arc<str>,
    max_records: i64,
    max_bytes: usize,
    policy: ReadPolicy,
    limits: &Limits,
) -> Result<Acquired, runnel_log::LogError> {
    let now_ms = runnel_core::clock::now_ms();
    let log = p.log.lock();
    let hw = p.high_watermark_with(&log);
    let upper = if policy.read_committed {
        log.last_stable_offset().min(hw)
    } else {
        hw
    };
    if !sp.is_initialized() {
        let start = match policy.reset {
            AutoOffsetReset::Earliest => log.log_start_offset(),
            AutoOffsetReset::Latest => hw,
            AutoOffsetReset::ByDuration(d) => {
                let since = now_ms - d.as_millis().min(i64::MAX as u128) as i64;
                log.offset_for_timestamp(since)?
                    .map_or(hw, |(offset, _)| offset.min(hw))
            }
        };
        sp.reset_to(start);
    }
    sp.on_log_start(log.log_start_offset());
    sp.expire_locks(now_ms, limits);
    if max_records <= 0 || max_bytes == 0 {
        return Ok(Acquired::default());
    }
    if let Some(first) = sp.first_available() {
        let read = log.read(first, max_bytes, upper, true)?;
        let batches = batch_bounds(&read.records);
        let Some(last) = batches.last().map(|b| b.last) else {
            return Ok(Acquired::default());
        };
        let ranges = sp.acquire_available(member, first, last, max_records, now_ms, limits);
        let used_to = ranges.last().map_or(0, |r| r.last_offset);
        let end = batches
            .iter()
            .find(|b| b.last >= used_to)
            .map_or(0, |b| b.end);
        if !ranges.is_empty() {
            return Ok(Acquired {
                records: Bytes::from(read.records).slice(..end),
                ranges,
            });
        }
    }
    let from = sp.end_offset();
    if from >= upper || from - sp.start_offset() >= limits.max_in_flight {
        return Ok(Acquired::default());
    }
    let read = log.read(from, max_bytes, upper, true)?;
    let mut last = None;
    let mut end = 0;
    let mut taken_batches = Vec::new();
    for b in batch_bounds(&read.records) {
        if b.last < from {
            end = b.end;
            continue;
        }
        if let Some(l) = last {
            let taken: i64 = l - from + 1;
            if taken >= max_records || b.base.max(from) - sp.start_offset() >= limits.max_in_flight
            {
                break;
            }
        }
        last = Some(b.last.min(upper - 1));
        end = b.end;
        taken_batches.push(b);
    }
    let archive = if policy.read_committed {
        aborted_ranges(&log, &taken_batches, from, upper)
    } else {
        Vec::new()
    };
    drop(log);
    let ranges = last.map_or_else(Vec::new, |l| {
        sp.acquire_new(member, l, &archive, now_ms, limits)
    });
    if ranges.is_empty() {
        return Ok(Acquired::default());
    }
    Ok(Acquired {
        records: Bytes::from(read.records).slice(..end),
        ranges,
    })
}

/// The offsets of `batches` that hold data of aborted transactions (sorted, disjoint),
/// as Kafka's `SharePartition.filterAbortedTransactionalAcquiredRecords` finds them: a
/// transactional data batch whose producer aborted a transaction that started at or
/// before the batch and ended (its abort marker) after it.
fn aborted_ranges(
    log: &runnel_log::PartitionLog,
    batches: &[Batch],
    from: i64,
    upper: i64,
) -> Vec<(i64, i64)> {
    let aborted = log.aborted_transactions(from, upper);
    if aborted.is_empty() {
        return Vec::new();
    }
    batches
        .iter()
        .filter(|b| b.transactional && !b.control)
        .filter(|b| {
            aborted.iter().any(|a| {
                a.producer_id == b.producer_id
                    && a.first_offset <= b.base
                    && b.last <= a.last_offset
            })
        })
        .map(|b| (b.base.max(from), b.last))
        .collect()
}

/// One whole batch of a log read: its offsets, what kind it is and where it ends in
/// the buffer.
#[derive(Debug, Clone, Copy)]
struct Batch {
    base: i64,
    last: i64,
    producer_id: i64,
    transactional: bool,
    control: bool,
    /// The byte just past the batch.
    end: usize,
}

/// Each whole batch in `buf`.
fn batch_bounds(buf: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    let _ = runnel_log::batch::for_each_batch(buf, |range| {
        let h = runnel_log::BatchHeader::parse(&buf[range.clone()])?;
        out.push(Batch {
            base: h.base_offset,
            last: h.last_offset(),
            producer_id: h.producer_id,
            transactional: h.is_transactional(),
            control: h.is_control(),
            end: range.end,
        });
        Ok(())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_offset_reset_values() {
        assert_eq!(AutoOffsetReset::parse(None), AutoOffsetReset::Latest);
        assert_eq!(
            AutoOffsetReset::parse(Some("EARLIEST")),
            AutoOffsetReset::Earliest
        );
        assert_eq!(
            AutoOffsetReset::parse(Some("by_duration:PT1H30M")),
            AutoOffsetReset::ByDuration(Duration::from_secs(5400))
        );
        assert_eq!(
            AutoOffsetReset::parse(Some("by_duration:P1DT0.5S")),
            AutoOffsetReset::ByDuration(Duration::from_millis(86_400_500))
        );
        assert_eq!(
            AutoOffsetReset::parse(Some("by_duration:PX")),
            AutoOffsetReset::Latest
        );
    }
}
