//! Per-batch progress in the JSON shape of Spark's `StreamingQueryProgress`.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Progress reports kept per query (Spark's `spark.sql.streaming.numRecentProgressUpdates`).
pub const RECENT_PROGRESS: usize = 100;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub id: String,
    pub run_id: String,
    pub name: Option<String>,
    pub timestamp: String,
    pub batch_id: u64,
    pub batch_duration: u64,
    pub num_input_rows: u64,
    pub input_rows_per_second: f64,
    pub processed_rows_per_second: f64,
    pub duration_ms: BTreeMap<String, u64>,
    pub event_time: BTreeMap<String, String>,
    pub state_operators: Vec<StateOperatorProgress>,
    pub sources: Vec<SourceProgress>,
    pub sink: SinkProgress,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateOperatorProgress {
    pub operator_name: String,
    pub num_rows_total: u64,
    pub num_rows_updated: u64,
    pub num_rows_removed: u64,
    pub num_rows_dropped_by_watermark: u64,
    pub memory_used_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceProgress {
    pub description: String,
    pub start_offset: serde_json::Value,
    pub end_offset: serde_json::Value,
    pub latest_offset: serde_json::Value,
    pub num_input_rows: u64,
    pub input_rows_per_second: f64,
    pub processed_rows_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkProgress {
    pub description: String,
    pub num_output_rows: i64,
}

/// The recent progress of a query, shared with the HTTP server. Thread-safe.
#[derive(Clone, Default)]
pub struct ProgressLog {
    inner: Arc<Mutex<VecDeque<Progress>>>,
}

impl ProgressLog {
    pub fn push(&self, p: Progress) {
        let mut q = self.inner.lock();
        if q.len() >= RECENT_PROGRESS {
            q.pop_front();
        }
        q.push_back(p);
    }

    pub fn recent(&self) -> Vec<Progress> {
        self.inner.lock().iter().cloned().collect()
    }

    pub fn last(&self) -> Option<Progress> {
        self.inner.lock().back().cloned()
    }

    /// Rows per second since the previous batch started (Spark's inputRowsPerSecond).
    pub fn input_rate(&self, rows: u64, now_ms: i64) -> f64 {
        let q = self.inner.lock();
        let Some(prev) = q.back() else { return 0.0 };
        let prev_ms = parse_iso_ms(&prev.timestamp).unwrap_or(now_ms);
        let dt = (now_ms - prev_ms).max(1) as f64 / 1000.0;
        rows as f64 / dt
    }
}

/// `2024-01-01T00:00:00.000Z`
pub fn iso_time(ms: i64) -> String {
    crate::functions::format_java(ms, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
}

fn parse_iso_ms(s: &str) -> Option<i64> {
    // yyyy-MM-ddTHH:mm:ss.SSSZ
    let b = s.as_bytes();
    if b.len() < 23 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // days from civil (inverse of civil_from_days)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_round_trip() {
        for ms in [0i64, 1_539_202_764_123, 1_700_000_000_000] {
            assert_eq!(super::parse_iso_ms(&super::iso_time(ms)), Some(ms));
        }
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00.000Z");
    }
}
