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

/// What a query prints to stderr after each batch. Thread-safe (a value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressOutput {
    /// Nothing (the library's default).
    #[default]
    None,
    /// One summary line per batch that read or wrote rows (`runnel sql`'s default):
    /// no-data batches of an idle query print nothing.
    Line,
    /// Spark's full `StreamingQueryProgress` JSON for every batch.
    Json,
}

impl ProgressOutput {
    pub fn parse(s: &str) -> Result<ProgressOutput, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "line" => Ok(ProgressOutput::Line),
            "json" => Ok(ProgressOutput::Json),
            "none" | "off" => Ok(ProgressOutput::None),
            other => Err(format!(
                "progress format {other:?}: expected line, json or none"
            )),
        }
    }

    /// The text to print for `p`, if any.
    pub fn render(self, p: &Progress) -> Option<String> {
        match self {
            ProgressOutput::None => None,
            ProgressOutput::Json => Some(serde_json::to_string_pretty(p).unwrap_or_default()),
            ProgressOutput::Line => {
                (p.num_input_rows > 0 || p.sink.num_output_rows > 0).then(|| p.summary_line())
            }
        }
    }
}

impl Progress {
    /// `batch 3: 1200 rows in (2400 rows/s), 350 ms, 10 rows out, watermark
    /// 2024-01-01T00:00:00.000Z, state 42 rows`
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "batch {}: {} rows in ({:.0} rows/s), {} ms, {} rows out",
            self.batch_id,
            self.num_input_rows,
            self.input_rows_per_second,
            self.batch_duration,
            self.sink.num_output_rows.max(0),
        );
        if let Some(w) = self.event_time.get("watermark") {
            line.push_str(&format!(", watermark {w}"));
        }
        if !self.state_operators.is_empty() {
            let rows: u64 = self.state_operators.iter().map(|s| s.num_rows_total).sum();
            line.push_str(&format!(", state {rows} rows"));
        }
        line
    }
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
    use super::*;

    fn progress(rows_in: u64, rows_out: i64, state: Option<u64>) -> Progress {
        Progress {
            id: "q".into(),
            run_id: "r".into(),
            name: None,
            timestamp: iso_time(0),
            batch_id: 7,
            batch_duration: 350,
            num_input_rows: rows_in,
            input_rows_per_second: 2400.4,
            processed_rows_per_second: 0.0,
            duration_ms: BTreeMap::new(),
            event_time: [("watermark".to_string(), iso_time(60_000))].into(),
            state_operators: state
                .map(|n| StateOperatorProgress {
                    operator_name: "stateStoreSave".into(),
                    num_rows_total: n,
                    num_rows_updated: 0,
                    num_rows_removed: 0,
                    num_rows_dropped_by_watermark: 0,
                    memory_used_bytes: 0,
                })
                .into_iter()
                .collect(),
            sources: Vec::new(),
            sink: SinkProgress {
                description: "s".into(),
                num_output_rows: rows_out,
            },
        }
    }

    #[test]
    fn summary_line_and_idle_batches() {
        let p = progress(1200, 10, Some(42));
        assert_eq!(
            ProgressOutput::Line.render(&p).unwrap(),
            "batch 7: 1200 rows in (2400 rows/s), 350 ms, 10 rows out, \
             watermark 1970-01-01T00:01:00.000Z, state 42 rows"
        );
        // A no-data batch that wrote nothing prints no line, but its JSON.
        let idle = progress(0, 0, None);
        assert_eq!(ProgressOutput::Line.render(&idle), None);
        let json = ProgressOutput::Json.render(&idle).unwrap();
        assert!(json.contains("\"batchId\": 7"), "{json}");
        assert_eq!(ProgressOutput::None.render(&p), None);
        // A no-data batch that closed windows (rows out) prints its line.
        assert!(ProgressOutput::Line
            .render(&progress(0, 3, Some(0)))
            .is_some());
        assert_eq!(ProgressOutput::parse("JSON"), Ok(ProgressOutput::Json));
        assert!(ProgressOutput::parse("yaml").is_err());
    }

    #[test]
    fn iso_round_trip() {
        for ms in [0i64, 1_539_202_764_123, 1_700_000_000_000] {
            assert_eq!(parse_iso_ms(&iso_time(ms)), Some(ms));
        }
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
    }
}
