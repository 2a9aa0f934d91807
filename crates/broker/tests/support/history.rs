//! A history checker for replicated logs, after Jepsen's Kafka checks (the Rust twin of
//! tests/clients/python/history.py).
//!
//! Writers send unique values with acks=all and idempotence while faults are injected;
//! the `History` records what the cluster acknowledged (partition, offset, value) and
//! what failed (indeterminate: maybe written, maybe not). Afterwards every partition is
//! read back whole and `check` reports:
//!
//! - lost: acknowledged values that are not in the log;
//! - duplicates: values that appear more than once;
//! - changed: acknowledged offsets that now hold another value;
//! - reordered: values of one writer on one partition out of send order (each writer's
//!   values carry an increasing sequence number);
//! - unexpected: values in the log that were never sent.
//!
//! Indeterminate values may appear (once) or not; they are not counted as lost.
//!
//! Thread-safe: `History` is shared by the writers behind a mutex.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

#[derive(Default)]
pub struct History {
    inner: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    /// value -> (writer, seq)
    sent: HashMap<String, (usize, u64)>,
    /// value -> (partition, offset)
    acked: HashMap<String, (i32, i64)>,
    /// value -> error (indeterminate)
    failed: HashMap<String, String>,
}

/// Every record read back: partition -> [(offset, value)] in offset order.
pub type Log = BTreeMap<i32, Vec<(i64, String)>>;

/// Anomalies found by `check`; all empty = good.
#[derive(Debug, Default)]
pub struct Anomalies {
    pub lost: Vec<String>,
    /// (value, first (partition, offset), again (partition, offset))
    pub duplicates: Vec<(String, (i32, i64), (i32, i64))>,
    /// ((partition, offset), acknowledged value, value found)
    pub changed: Vec<((i32, i64), String, String)>,
    /// (partition, offset, value, the writer's previous sequence on the partition)
    pub reordered: Vec<(i32, i64, String, u64)>,
    /// (partition, offset, value)
    pub unexpected: Vec<(i32, i64, String)>,
}

impl Anomalies {
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty()
            && self.duplicates.is_empty()
            && self.changed.is_empty()
            && self.reordered.is_empty()
            && self.unexpected.is_empty()
    }

    /// Counts, then up to five examples of each kind.
    pub fn describe(&self) -> String {
        fn some<T: std::fmt::Debug>(v: &[T]) -> String {
            format!("{} {:?}", v.len(), &v[..v.len().min(5)])
        }
        format!(
            "lost {}; duplicates {}; changed {}; reordered {}; unexpected {}",
            some(&self.lost),
            some(&self.duplicates),
            some(&self.changed),
            some(&self.reordered),
            some(&self.unexpected)
        )
    }
}

impl History {
    pub fn note_sent(&self, value: &str, writer: usize, seq: u64) {
        self.inner
            .lock()
            .sent
            .insert(value.to_string(), (writer, seq));
    }

    pub fn note_acked(&self, value: &str, partition: i32, offset: i64) {
        self.inner
            .lock()
            .acked
            .insert(value.to_string(), (partition, offset));
    }

    pub fn note_failed(&self, value: &str, error: String) {
        self.inner.lock().failed.insert(value.to_string(), error);
    }

    /// (sent, acknowledged, indeterminate)
    pub fn counts(&self) -> (usize, usize, usize) {
        let r = self.inner.lock();
        (r.sent.len(), r.acked.len(), r.failed.len())
    }

    /// A few of the indeterminate sends' errors, for the report.
    pub fn some_failures(&self, n: usize) -> Vec<String> {
        let r = self.inner.lock();
        let mut out: Vec<String> = r.failed.iter().map(|(v, e)| format!("{v}: {e}")).collect();
        out.sort();
        out.truncate(n);
        out
    }

    /// The anomalies of `log` (every partition read back whole) against this history.
    pub fn check(&self, log: &Log) -> Anomalies {
        let r = self.inner.lock();
        let mut a = Anomalies::default();
        let mut at: HashMap<&str, (i32, i64)> = HashMap::new();
        for (&p, records) in log {
            let mut last_seq: HashMap<usize, u64> = HashMap::new();
            for (offset, value) in records {
                if let Some(first) = at.get(value.as_str()) {
                    a.duplicates.push((value.clone(), *first, (p, *offset)));
                    continue;
                }
                at.insert(value, (p, *offset));
                let Some(&(writer, seq)) = r.sent.get(value) else {
                    a.unexpected.push((p, *offset, value.clone()));
                    continue;
                };
                if let Some(&last) = last_seq.get(&writer) {
                    if seq <= last {
                        a.reordered.push((p, *offset, value.clone(), last));
                    }
                }
                let e = last_seq.entry(writer).or_insert(seq);
                *e = (*e).max(seq);
            }
        }
        let by_position: HashMap<(i32, i64), &str> = at.iter().map(|(v, pos)| (*pos, *v)).collect();
        let mut acked: Vec<(&String, &(i32, i64))> = r.acked.iter().collect();
        acked.sort();
        for (value, pos) in acked {
            if !at.contains_key(value.as_str()) {
                a.lost.push(value.clone());
            }
            if let Some(now) = by_position.get(pos) {
                if *now != value {
                    a.changed.push((*pos, value.clone(), now.to_string()));
                }
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_finds_each_kind_of_anomaly() {
        let h = History::default();
        for (v, w, s) in [("a-0", 0, 0), ("a-1", 0, 1), ("a-2", 0, 2), ("b-0", 1, 0)] {
            h.note_sent(v, w, s);
        }
        h.note_acked("a-0", 0, 0);
        h.note_acked("a-1", 0, 1);
        h.note_acked("b-0", 0, 2);
        h.note_failed("a-2", "timeout".into());
        let good: Log = [(
            0,
            vec![(0, "a-0".into()), (1, "a-1".into()), (2, "b-0".into())],
        )]
        .into();
        assert!(h.check(&good).is_empty(), "{}", h.check(&good).describe());
        // a-1 lost, a-0 duplicated, b-0's offset holds a-2, a-0 again after a-2, x unknown
        let bad: Log = [(
            0,
            vec![
                (0, "a-0".into()),
                (1, "x".into()),
                (2, "a-2".into()),
                (3, "a-0".into()),
                (4, "b-0".into()),
            ],
        )]
        .into();
        let a = h.check(&bad);
        assert_eq!(a.lost, vec!["a-1".to_string()]);
        assert_eq!(a.duplicates.len(), 1);
        assert_eq!(
            a.changed,
            vec![
                ((0, 1), "a-1".to_string(), "x".to_string()),
                ((0, 2), "b-0".to_string(), "a-2".to_string())
            ]
        );
        assert_eq!(a.unexpected, vec![(0, 1, "x".to_string())]);
        assert!(a.reordered.is_empty());
        let reordered: Log = [(0, vec![(0, "a-1".into()), (1, "a-0".into())])].into();
        assert_eq!(h.check(&reordered).reordered.len(), 1);
    }
}
