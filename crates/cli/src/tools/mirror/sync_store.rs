//! Offset translation for checkpoints (MM2's `OffsetSyncStore`): where copied source
//! records went on the target, for one source partition.
//!
//! Fed with the offset syncs earlier runs stored (read back at start, as MM2 backfills
//! its store from the offset-syncs topic since KAFKA-15905) and with every range this
//! run copies. It holds at most [`SyncStore::CAPACITY`] entries: the newest
//! [`SyncStore::DENSE`] are all kept, older ones are thinned to one per power-of-two
//! distance from the newest (plus the oldest), like MM2's exponentially spaced sync
//! array. So a group far behind the end still translates (less precisely: it may
//! re-read records, never skip one), where dropping the oldest entries first left such
//! a group with no checkpoint at all.
//!
//! Not thread-safe: the tool keeps each store under its topics lock.

use std::collections::BTreeMap;

/// Where a run of consecutive records went: upstream offsets `first..=last` (dense when
/// `last - first + 1 == count`) were copied to target offsets `downstream..downstream +
/// count`. An offset sync is a run of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedRange {
    pub last: i64,
    pub downstream: i64,
    pub count: i64,
}

/// One source partition's translation index, keyed by first upstream offset.
#[derive(Debug, Clone, Default)]
pub struct SyncStore {
    ranges: BTreeMap<i64, CopiedRange>,
}

impl SyncStore {
    /// Entries kept at most.
    pub const CAPACITY: usize = 1024;
    /// The newest entries always kept when thinning (exact translation near the end).
    pub const DENSE: usize = 512;

    /// Records that upstream `first..=last` (`count` records) went to target offsets
    /// from `downstream` on. Callers record in upstream order. A range that starts at or
    /// before ones already held replaces them (MM2 drops its syncs on such a rewind): the
    /// copying started over there (stored progress lost, or offset syncs written as hints
    /// on the source for a transaction that then aborted), so what they said is stale.
    pub fn record(&mut self, first: i64, last: i64, downstream: i64, count: i64) {
        assert!(
            first <= last && count >= 1,
            "a copied range holds records: {first}..={last}, {count} records"
        );
        drop(self.ranges.split_off(&first));
        let range = CopiedRange {
            last,
            downstream,
            count,
        };
        self.ranges.insert(first, range);
        if self.ranges.len() > Self::CAPACITY {
            self.thin();
        }
        assert!(self.ranges.len() <= Self::CAPACITY);
    }

    /// Records an offset sync: upstream offset `upstream` went to `downstream`.
    pub fn sync(&mut self, upstream: i64, downstream: i64) {
        self.record(upstream, upstream, downstream, 1);
    }

    /// The target offset a consumer whose next upstream offset is `upstream` may resume
    /// from without skipping a record; None when nothing at or before it is known (MM2
    /// emits no checkpoint then). Exact inside a dense range; otherwise MM2's rule: the
    /// target offset after the last record known to be before it.
    pub fn translate(&self, upstream: i64) -> Option<i64> {
        let (&first, r) = self.ranges.range(..=upstream).next_back()?;
        Some(if upstream > r.last {
            r.downstream.saturating_add(r.count)
        } else if r.last.saturating_sub(first).saturating_add(1) == r.count {
            r.downstream.saturating_add(upstream - first)
        } else if upstream == first {
            r.downstream
        } else {
            r.downstream.saturating_add(1)
        })
    }

    /// Keeps the newest `DENSE` entries, then, going back, the newest entry at each
    /// power-of-two distance from the newest upstream offset, and the oldest entry (the
    /// earliest offset that still translates).
    fn thin(&mut self) {
        let Some((&oldest, _)) = self.ranges.first_key_value() else {
            return;
        };
        let newest = self.ranges.last_key_value().expect("not empty").1.last;
        let older: Vec<i64> = self
            .ranges
            .keys()
            .rev()
            .skip(Self::DENSE)
            .copied()
            .collect();
        // Going back, distances only grow: an entry in the bucket of the last one kept
        // is dropped.
        let mut kept_bucket = None;
        for first in older {
            let bucket = 63 - newest.saturating_sub(first).max(1).leading_zeros();
            if first != oldest && kept_bucket == Some(bucket) {
                self.ranges.remove(&first);
            } else {
                kept_bucket = Some(bucket);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store fed with offset syncs for upstream `0, step, 2 * step, ..` (`n` of them),
    /// each landing `shift` offsets later on the target.
    fn synced(n: i64, step: i64, shift: i64) -> SyncStore {
        let mut store = SyncStore::default();
        for i in 0..n {
            store.sync(i * step, i * step + shift);
        }
        store
    }

    #[test]
    fn translation_never_skips_a_record() {
        // 10..=19 dense at 100..110; 30..=40 with gaps (compacted) as 5 records at 110.
        let mut store = SyncStore::default();
        store.record(10, 19, 100, 10);
        store.record(30, 40, 110, 5);
        assert_eq!(store.translate(9), None);
        assert_eq!(store.translate(10), Some(100));
        assert_eq!(store.translate(15), Some(105));
        assert_eq!(
            store.translate(20),
            Some(110),
            "after the range: the next copied record"
        );
        assert_eq!(store.translate(30), Some(110));
        assert_eq!(
            store.translate(35),
            Some(111),
            "inside gaps: never past a record not read"
        );
        assert_eq!(store.translate(99), Some(115));
    }

    #[test]
    fn a_group_far_behind_still_translates_after_many_syncs() {
        // 5,000 syncs (more than a restarted run reads back or a long run records):
        // the oldest, and offsets far behind the newest, still translate, with MM2's
        // rule against the nearest sync kept before them.
        let (n, step, shift) = (5_000, 10, 7);
        let store = synced(n, step, shift);
        assert!(store.len() <= SyncStore::CAPACITY, "{}", store.len());
        assert_eq!(store.translate(-1), None, "before every sync");
        assert_eq!(store.translate(0), Some(shift), "the oldest sync is kept");
        assert_eq!(store.translate(5), Some(shift + 1));
        let newest = (n - 1) * step;
        for upstream in (0..=newest + 3).step_by(3) {
            let got = store.translate(upstream).expect("translates");
            // The next record at or after `upstream` is on the target at `next`.
            let next = (upstream + step - 1) / step * step + shift;
            assert!(
                got <= next,
                "{upstream} -> {got}: past the record at {next}"
            );
            if upstream > newest - (SyncStore::DENSE as i64 - 1) * step {
                // Near the end every sync is kept: MM2's exact rule.
                let sync = upstream / step * step;
                let want = sync + shift + i64::from(upstream != sync);
                assert_eq!(got, want.min(newest + shift + 1), "{upstream}");
            } else {
                // Farther back precision falls with the distance, never to nothing.
                let behind = newest - upstream;
                assert!(next - got <= 4 * behind + step, "{upstream} -> {got}");
            }
        }
    }

    #[test]
    fn thinning_keeps_the_store_bounded_and_translation_monotonic() {
        let store = synced(100_000, 3, 0);
        assert!(store.len() <= SyncStore::CAPACITY);
        let mut previous = i64::MIN;
        for upstream in (0..300_000).step_by(997) {
            let got = store.translate(upstream).unwrap();
            assert!(got >= previous, "translation went back at {upstream}");
            previous = got;
        }
    }

    #[test]
    fn a_rewind_replaces_what_it_overlaps() {
        let mut store = synced(10, 10, 0); // 0, 10, .., 90
                                           // Copying started over at 50 (the syncs past it were hints of an aborted
                                           // transaction): 50 is now at 500.
        store.sync(50, 500);
        assert_eq!(store.translate(45), Some(41), "older syncs still hold");
        assert_eq!(store.translate(50), Some(500));
        assert_eq!(
            store.translate(95),
            Some(501),
            "the stale sync at 90 is gone"
        );
        store.sync(-1, 999);
        assert_eq!(
            store.translate(45),
            Some(1000),
            "a start from scratch drops all"
        );
        assert_eq!(store.len(), 1);
    }
}
