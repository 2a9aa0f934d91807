//! One share-partition's delivery state (KIP-932's `SharePartition`): the share-partition
//! start offset (SPSO), the in-flight records between it and the end offset (SPEO, the
//! next offset never delivered), each with its state, delivery count, owner and
//! acquisition lock deadline.
//!
//! Pure logic: time is passed in (`now_ms`), nothing here reads the log or the clock, so
//! every transition is unit-tested. Not thread-safe: the owner (`share::Shares`) keeps
//! each share-partition behind its own mutex.
//!
//! Invariants (asserted in `check`): every offset in `[start, end)` has exactly one entry;
//! the entry at `start` (if any) is neither acknowledged nor archived (those are pruned as
//! the start moves); an acquired record has an owner and a lock deadline, any other has
//! neither; an acknowledged record never becomes available or acquired again.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired,
    Acknowledged,
    Archived,
}

/// KIP-932's acknowledge types (ShareFetch/ShareAcknowledge `AcknowledgeTypes`).
pub const ACK_GAP: i8 = 0;
pub const ACK_ACCEPT: i8 = 1;
pub const ACK_RELEASE: i8 = 2;
pub const ACK_REJECT: i8 = 3;

#[derive(Debug, Clone)]
struct InFlight {
    state: RecordState,
    delivery_count: i16,
    owner: Option<Arc<str>>,
    lock_deadline_ms: i64,
}

/// Limits that apply to a share-partition (Kafka's `group.share.*` keys).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `group.share.delivery.count.limit`: a record released (or whose lock expired)
    /// after this many deliveries is archived instead of made available again.
    pub delivery_count_limit: i16,
    /// `group.share.partition.max.record.locks`: at most this many in-flight records
    /// (`end - start`); no new records are acquired beyond it.
    pub max_in_flight: i64,
    /// The acquisition lock duration for this group.
    pub lock_duration_ms: i64,
}

/// A contiguous run of records acquired by one fetch, with one delivery count
/// (ShareFetch's `AcquiredRecords`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquiredRange {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_count: i16,
}

#[derive(Debug, Clone)]
pub struct SharePartitionState {
    start: i64,
    end: i64,
    records: BTreeMap<i64, InFlight>,
    /// Whether the start has been placed (`share.auto.offset.reset`, or a persisted state).
    initialized: bool,
    /// The epoch of the last snapshot written to `__share_group_state`.
    pub snapshot_epoch: i32,
    /// The data partition's leader epoch this state was built under (None: not yet
    /// checked); a different epoch means leadership moved and the state is read again.
    pub leader_epoch: Option<i32>,
}

/// Counts for describe and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub start_offset: i64,
    pub in_flight: i64,
    pub acquired: i64,
}

impl Default for SharePartitionState {
    fn default() -> Self {
        Self::new()
    }
}

impl SharePartitionState {
    pub fn new() -> Self {
        SharePartitionState {
            start: 0,
            end: 0,
            records: BTreeMap::new(),
            initialized: false,
            snapshot_epoch: 0,
            leader_epoch: None,
        }
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// Places the start offset (and so the end): `share.auto.offset.reset` on first use,
    /// or an admin's AlterShareGroupOffsets (which Kafka allows only on an empty group).
    pub fn reset_to(&mut self, offset: i64) {
        self.start = offset;
        self.end = offset;
        self.records.clear();
        self.initialized = true;
    }

    pub fn start_offset(&self) -> i64 {
        self.start
    }

    pub fn end_offset(&self) -> i64 {
        self.end
    }

    pub fn summary(&self) -> Summary {
        Summary {
            start_offset: self.start,
            in_flight: self.end - self.start,
            acquired: self
                .records
                .values()
                .filter(|r| r.state == RecordState::Acquired)
                .count() as i64,
        }
    }

    /// The state of one offset: None below the start or at/after the end.
    pub fn state_of(&self, offset: i64) -> Option<(RecordState, i16)> {
        self.records
            .get(&offset)
            .map(|r| (r.state, r.delivery_count))
    }

    /// The earliest lock deadline, for a parked fetch to wake when a lock expires.
    pub fn next_lock_deadline_ms(&self) -> Option<i64> {
        self.records
            .values()
            .filter(|r| r.state == RecordState::Acquired)
            .map(|r| r.lock_deadline_ms)
            .min()
    }

    /// Releases the acquired records whose lock expired (or archives them at the
    /// delivery limit). Returns how many changed state.
    pub fn expire_locks(&mut self, now_ms: i64, limits: &Limits) -> usize {
        let mut changed = 0;
        for r in self.records.values_mut() {
            if r.state == RecordState::Acquired && r.lock_deadline_ms <= now_ms {
                release(r, limits);
                changed += 1;
            }
        }
        self.advance_start();
        changed
    }

    /// The log start moved past records (retention, DeleteRecords): they are archived.
    pub fn on_log_start(&mut self, log_start: i64) {
        if !self.initialized || log_start <= self.start {
            return;
        }
        if log_start >= self.end {
            self.reset_to(log_start);
            return;
        }
        self.records = self.records.split_off(&log_start);
        self.start = log_start;
        self.advance_start();
    }

    /// The first available record in flight, if any (redelivery comes before new records).
    pub fn first_available(&self) -> Option<i64> {
        self.records
            .iter()
            .find(|(_, r)| r.state == RecordState::Available)
            .map(|(o, _)| *o)
    }

    /// Whether a fetch could acquire anything now: an available in-flight record, or new
    /// records below `high_watermark` within the in-flight limit.
    pub fn can_acquire(&self, high_watermark: i64, limits: &Limits) -> bool {
        self.first_available().is_some()
            || (self.end < high_watermark && self.end - self.start < limits.max_in_flight)
    }

    /// Acquires for `member` the available in-flight records in `[from, to]`, at most
    /// `max_records`. Returns the acquired ranges.
    pub fn acquire_available(
        &mut self,
        member: &Arc<str>,
        from: i64,
        to: i64,
        max_records: i64,
        now_ms: i64,
        limits: &Limits,
    ) -> Vec<AcquiredRange> {
        let mut out = Vec::new();
        let mut taken = 0;
        for (&offset, r) in self.records.range_mut(from..=to) {
            if taken >= max_records {
                break;
            }
            if r.state != RecordState::Available {
                continue;
            }
            r.state = RecordState::Acquired;
            r.delivery_count = r.delivery_count.saturating_add(1);
            r.owner = Some(member.clone());
            r.lock_deadline_ms = now_ms + limits.lock_duration_ms;
            taken += 1;
            push_range(&mut out, offset, r.delivery_count);
        }
        out
    }

    /// Acquires for `member` the new records `[self.end, last]`, except the offsets in
    /// `archive` (sorted, disjoint ranges: the data of aborted transactions under
    /// `read_committed`, which Kafka's `SharePartition` archives instead of handing
    /// out). Returns the acquired ranges.
    pub fn acquire_new(
        &mut self,
        member: &Arc<str>,
        last: i64,
        archive: &[(i64, i64)],
        now_ms: i64,
        limits: &Limits,
    ) -> Vec<AcquiredRange> {
        let mut out = Vec::new();
        let mut skip = archive.iter().peekable();
        for offset in self.end..=last {
            while skip.peek().is_some_and(|r| r.1 < offset) {
                skip.next();
            }
            let archived = skip.peek().is_some_and(|r| r.0 <= offset);
            let record = if archived {
                InFlight {
                    state: RecordState::Archived,
                    delivery_count: 0,
                    owner: None,
                    lock_deadline_ms: 0,
                }
            } else {
                push_range(&mut out, offset, 1);
                InFlight {
                    state: RecordState::Acquired,
                    delivery_count: 1,
                    owner: Some(member.clone()),
                    lock_deadline_ms: now_ms + limits.lock_duration_ms,
                }
            };
            self.records.insert(offset, record);
        }
        self.end = self.end.max(last + 1);
        self.advance_start();
        out
    }

    /// Applies one acknowledgement batch from `member`: `types` holds one type for the
    /// whole range or one per offset. All or nothing: every offset must be acquired by
    /// `member` (INVALID_RECORD_STATE otherwise, Kafka's answer), the types valid
    /// (INVALID_REQUEST).
    pub fn acknowledge(
        &mut self,
        member: &str,
        first: i64,
        last: i64,
        types: &[i8],
        limits: &Limits,
    ) -> Result<(), ErrorCode> {
        if first > last || types.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        let count = last - first + 1;
        if types.len() != 1 && types.len() as i64 != count {
            return Err(ErrorCode::InvalidRequest);
        }
        if types.iter().any(|t| !(ACK_GAP..=ACK_REJECT).contains(t)) {
            return Err(ErrorCode::InvalidRequest);
        }
        if first < self.start || last >= self.end {
            return Err(ErrorCode::InvalidRecordState);
        }
        let owned = self
            .records
            .range(first..=last)
            .all(|(_, r)| r.state == RecordState::Acquired && r.owner.as_deref() == Some(member));
        if !owned {
            return Err(ErrorCode::InvalidRecordState);
        }
        for (i, (_, r)) in self.records.range_mut(first..=last).enumerate() {
            let t = if types.len() == 1 { types[0] } else { types[i] };
            match t {
                ACK_ACCEPT => settle(r, RecordState::Acknowledged),
                ACK_RELEASE => {
                    release(r, limits);
                }
                // A gap (an offset with no record) and a rejected record are archived.
                _ => settle(r, RecordState::Archived),
            }
        }
        self.advance_start();
        Ok(())
    }

    /// Releases every record `member` holds (its share session closed or it left the
    /// group). Returns how many were released.
    pub fn release_member(&mut self, member: &str, limits: &Limits) -> usize {
        let mut n = 0;
        for r in self.records.values_mut() {
            if r.state == RecordState::Acquired && r.owner.as_deref() == Some(member) {
                release(r, limits);
                n += 1;
            }
        }
        self.advance_start();
        n
    }

    /// The records in flight as Kafka's persisted state batches: (first, last, state,
    /// delivery count) runs, acquired records written as available (a lock does not
    /// survive a failover).
    pub fn state_batches(&self) -> Vec<(i64, i64, RecordState, i16)> {
        let mut out: Vec<(i64, i64, RecordState, i16)> = Vec::new();
        for (&o, r) in &self.records {
            let state = match r.state {
                RecordState::Acquired => RecordState::Available,
                s => s,
            };
            match out.last_mut() {
                Some(b) if b.1 + 1 == o && b.2 == state && b.3 == r.delivery_count => b.1 = o,
                _ => out.push((o, o, state, r.delivery_count)),
            }
        }
        out
    }

    /// Rebuilds the state from persisted batches (`state_batches`'s form).
    pub fn restore(&mut self, start: i64, batches: &[(i64, i64, RecordState, i16)]) {
        self.reset_to(start);
        for &(first, last, state, count) in batches {
            for o in first.max(start)..=last {
                let state = match state {
                    RecordState::Acquired => RecordState::Available,
                    s => s,
                };
                self.records.insert(
                    o,
                    InFlight {
                        state,
                        delivery_count: count,
                        owner: None,
                        lock_deadline_ms: 0,
                    },
                );
                self.end = self.end.max(o + 1);
            }
        }
        // Offsets between batches were never delivered here: they are fresh again only
        // if they are past every batch, so fill holes below `end` as available.
        for o in start..self.end {
            self.records.entry(o).or_insert(InFlight {
                state: RecordState::Available,
                delivery_count: 0,
                owner: None,
                lock_deadline_ms: 0,
            });
        }
        self.advance_start();
    }

    /// Moves the start past acknowledged and archived records, forgetting them.
    fn advance_start(&mut self) {
        while let Some(r) = self.records.get(&self.start) {
            if !matches!(r.state, RecordState::Acknowledged | RecordState::Archived) {
                break;
            }
            self.records.remove(&self.start);
            self.start += 1;
        }
        self.check();
    }

    /// The invariants in the module comment; on in release builds (a broken one would
    /// redeliver acknowledged records).
    fn check(&self) {
        assert!(self.start <= self.end, "share-partition start past its end");
        assert_eq!(
            self.records.len() as i64,
            self.end - self.start,
            "share-partition in-flight records not dense"
        );
        if let Some(r) = self.records.get(&self.start) {
            assert!(
                !matches!(r.state, RecordState::Acknowledged | RecordState::Archived),
                "settled record left at the share-partition start"
            );
        }
    }
}

fn settle(r: &mut InFlight, state: RecordState) {
    r.state = state;
    r.owner = None;
    r.lock_deadline_ms = 0;
}

/// An acquired record goes back to available, or is archived once delivered
/// `delivery_count_limit` times.
fn release(r: &mut InFlight, limits: &Limits) {
    if r.delivery_count >= limits.delivery_count_limit {
        settle(r, RecordState::Archived);
    } else {
        settle(r, RecordState::Available);
    }
}

fn push_range(out: &mut Vec<AcquiredRange>, offset: i64, delivery_count: i16) {
    match out.last_mut() {
        Some(r) if r.last_offset + 1 == offset && r.delivery_count == delivery_count => {
            r.last_offset = offset
        }
        _ => out.push(AcquiredRange {
            first_offset: offset,
            last_offset: offset,
            delivery_count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        delivery_count_limit: 3,
        max_in_flight: 10,
        lock_duration_ms: 1000,
    };

    fn member(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn started(at: i64) -> SharePartitionState {
        let mut s = SharePartitionState::new();
        s.reset_to(at);
        s
    }

    #[test]
    fn accept_moves_the_start_and_is_never_redelivered() {
        let mut s = started(5);
        let a = member("a");
        let r = s.acquire_new(&a, 9, &[], 0, &LIMITS)[0];
        assert_eq!((r.first_offset, r.last_offset, r.delivery_count), (5, 9, 1));
        s.acknowledge("a", 5, 7, &[ACK_ACCEPT], &LIMITS).unwrap();
        assert_eq!(s.start_offset(), 8);
        // The lock of the rest expires; the accepted ones stay gone.
        s.expire_locks(5_000, &LIMITS);
        assert_eq!(s.first_available(), Some(8));
        let again = s.acquire_available(&a, 0, 100, 100, 5_000, &LIMITS);
        assert_eq!(
            again,
            vec![AcquiredRange {
                first_offset: 8,
                last_offset: 9,
                delivery_count: 2
            }]
        );
    }

    #[test]
    fn acks_from_another_member_or_outside_are_refused_whole() {
        let mut s = started(0);
        s.acquire_new(&member("a"), 3, &[], 0, &LIMITS);
        assert_eq!(
            s.acknowledge("b", 0, 0, &[ACK_ACCEPT], &LIMITS),
            Err(ErrorCode::InvalidRecordState)
        );
        assert_eq!(
            s.acknowledge("a", 2, 4, &[ACK_ACCEPT], &LIMITS),
            Err(ErrorCode::InvalidRecordState)
        );
        assert_eq!(
            s.acknowledge("a", 0, 1, &[ACK_ACCEPT, 9], &LIMITS),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            s.acknowledge("a", 0, 2, &[ACK_ACCEPT, ACK_ACCEPT], &LIMITS),
            Err(ErrorCode::InvalidRequest)
        );
        // Nothing changed.
        assert_eq!(s.summary().acquired, 4);
        // Accepted twice: the second is refused.
        s.acknowledge("a", 0, 0, &[ACK_ACCEPT], &LIMITS).unwrap();
        assert_eq!(
            s.acknowledge("a", 0, 0, &[ACK_ACCEPT], &LIMITS),
            Err(ErrorCode::InvalidRecordState)
        );
    }

    #[test]
    fn release_up_to_the_delivery_limit_then_archived() {
        let mut s = started(0);
        let a = member("a");
        s.acquire_new(&a, 0, &[], 0, &LIMITS);
        for delivery in 1..LIMITS.delivery_count_limit {
            s.acknowledge("a", 0, 0, &[ACK_RELEASE], &LIMITS).unwrap();
            assert_eq!(s.state_of(0), Some((RecordState::Available, delivery)));
            let r = s.acquire_available(&a, 0, 0, 1, 0, &LIMITS);
            assert_eq!(r[0].delivery_count, delivery + 1);
        }
        s.acknowledge("a", 0, 0, &[ACK_RELEASE], &LIMITS).unwrap();
        assert_eq!(s.state_of(0), None);
        assert_eq!(s.start_offset(), 1);
    }

    #[test]
    fn an_expired_lock_at_the_delivery_limit_archives() {
        let mut s = started(0);
        let a = member("a");
        s.acquire_new(&a, 0, &[], 0, &LIMITS);
        let mut now = 0;
        for _ in 1..LIMITS.delivery_count_limit {
            now += LIMITS.lock_duration_ms;
            assert_eq!(s.next_lock_deadline_ms(), Some(now));
            assert_eq!(s.expire_locks(now, &LIMITS), 1);
            assert_eq!(s.acquire_available(&a, 0, 0, 1, now, &LIMITS).len(), 1);
        }
        // Not yet expired: nothing changes.
        assert_eq!(s.expire_locks(now, &LIMITS), 0);
        assert_eq!(s.expire_locks(now + LIMITS.lock_duration_ms, &LIMITS), 1);
        assert_eq!((s.start_offset(), s.state_of(0)), (1, None));
    }

    #[test]
    fn reject_and_gap_archive_per_offset_types() {
        let mut s = started(0);
        s.acquire_new(&member("a"), 3, &[], 0, &LIMITS);
        s.acknowledge(
            "a",
            0,
            3,
            &[ACK_GAP, ACK_REJECT, ACK_RELEASE, ACK_ACCEPT],
            &LIMITS,
        )
        .unwrap();
        assert_eq!(s.start_offset(), 2);
        assert_eq!(s.state_of(2), Some((RecordState::Available, 1)));
        assert_eq!(s.state_of(3), Some((RecordState::Acknowledged, 1)));
    }

    #[test]
    fn in_flight_limit_and_member_release() {
        let mut s = started(0);
        s.acquire_new(&member("a"), 9, &[], 0, &LIMITS);
        assert!(!s.can_acquire(100, &LIMITS));
        assert_eq!(s.release_member("a", &LIMITS), 10);
        assert!(s.can_acquire(100, &LIMITS));
        assert_eq!(s.next_lock_deadline_ms(), None);
    }

    #[test]
    fn persisted_batches_round_trip_without_locks() {
        let mut s = started(0);
        let a = member("a");
        s.acquire_new(&a, 5, &[], 0, &LIMITS);
        s.acknowledge("a", 1, 2, &[ACK_ACCEPT], &LIMITS).unwrap();
        let batches = s.state_batches();
        let mut r = SharePartitionState::new();
        r.restore(s.start_offset(), &batches);
        assert_eq!(r.start_offset(), 0);
        assert_eq!(r.end_offset(), 6);
        assert_eq!(r.state_of(1), Some((RecordState::Acknowledged, 1)));
        assert_eq!(r.state_of(0), Some((RecordState::Available, 1)));
        // Acknowledged records are not offered again.
        let got = r.acquire_available(&a, 0, 10, 10, 0, &LIMITS);
        let offsets: Vec<i64> = got
            .iter()
            .flat_map(|g| g.first_offset..=g.last_offset)
            .collect();
        assert_eq!(offsets, vec![0, 3, 4, 5]);
    }

    #[test]
    fn aborted_offsets_are_archived_not_acquired() {
        let mut s = started(0);
        let a = member("a");
        // 0-2 aborted data, 3 its marker, 4 plain, 5-6 aborted again.
        let got = s.acquire_new(&a, 6, &[(0, 2), (5, 6)], 0, &LIMITS);
        assert_eq!(
            got,
            vec![AcquiredRange {
                first_offset: 3,
                last_offset: 4,
                delivery_count: 1
            }]
        );
        assert_eq!((s.start_offset(), s.end_offset()), (3, 7));
        s.acknowledge("a", 3, 4, &[ACK_ACCEPT], &LIMITS).unwrap();
        assert_eq!((s.start_offset(), s.end_offset()), (7, 7));
        // Nothing archived comes back.
        assert_eq!(s.first_available(), None);
    }

    #[test]
    fn log_start_past_records_archives_them() {
        let mut s = started(0);
        s.acquire_new(&member("a"), 4, &[], 0, &LIMITS);
        s.on_log_start(3);
        assert_eq!(s.start_offset(), 3);
        assert_eq!(s.summary().in_flight, 2);
        s.on_log_start(10);
        assert_eq!((s.start_offset(), s.end_offset()), (10, 10));
    }
}
