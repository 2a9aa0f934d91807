//! Streaming deduplication: Spark's `dropDuplicates(cols)` and
//! `dropDuplicatesWithinWatermark(cols)`. In SQL:
//!
//! - `SELECT DISTINCT ON (k1, k2) cols FROM ...` keeps the first row seen per key
//!   (`dropDuplicates(k1, k2)`); `SELECT DISTINCT cols` uses every column as the key.
//! - `SELECT DISTINCT ON (k1) WITHIN WATERMARK cols FROM ...` is
//!   `dropDuplicatesWithinWatermark(k1)`: needs a watermark, and a key is remembered until
//!   the watermark passes its first event time plus the delay.
//!
//! State: one entry per key seen, with the event time at which it may be forgotten. With
//! a watermark on an event-time column among the keys, an entry goes once the watermark
//! passes it; within-watermark entries go once the watermark passes first event time +
//! delay; otherwise entries stay forever (as in Spark). Rows at or below the watermark
//! are late and dropped. Not thread-safe: owned by the query's driver.

use crate::error::{Result, SqlError};
use crate::functions::to_millis;
use crate::join::{new_progress, to_slot};
use crate::operator::StateOperator;
use crate::progress::StateOperatorProgress;
use crate::table::SlotTable;
use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use std::collections::HashMap;
use std::sync::Arc;

/// The marker `WITHIN WATERMARK` becomes in the SQL DataFusion plans (a constant key,
/// which changes nothing about which rows are duplicates); the planner strips it.
pub const WITHIN_WATERMARK_MARKER: &str = "__runnel_within_watermark__";

/// What the operator needs to know about its query.
#[derive(Clone, Debug)]
pub struct DedupSpec {
    /// The lower plan's columns: `n_keys` keys, then `n_select` output columns, then the
    /// event-time column if there is a watermark.
    pub n_keys: usize,
    pub n_select: usize,
    /// Delay of the watermark on the event-time column (the last lower column).
    pub delay_ms: Option<i64>,
    /// Whether that event-time column is one of the keys.
    pub time_in_keys: bool,
    pub within_watermark: bool,
}

/// The operator. See the module docs.
pub struct StreamDedup {
    lower: LogicalPlan,
    output: Arc<SlotTable>,
    spec: DedupSpec,
    conv: RowConverter,
    /// Key row bytes -> event time after which the key may be forgotten (i64::MAX: never).
    state: HashMap<Box<[u8]>, i64>,
    state_bytes: u64,
    max_event_time_ms: Option<i64>,
    metrics: StateOperatorProgress,
}

impl StreamDedup {
    pub fn new(
        lower: LogicalPlan,
        output: Arc<SlotTable>,
        spec: DedupSpec,
        key_types: Vec<DataType>,
    ) -> Result<StreamDedup> {
        if spec.within_watermark && spec.delay_ms.is_none() {
            return Err(SqlError::Unsupported(
                format!("dropDuplicatesWithinWatermark (DISTINCT ON (...) WITHIN WATERMARK) needs a watermark on the stream; {}", crate::plan::WATERMARK_HINT),
            ));
        }
        let conv = RowConverter::new(key_types.into_iter().map(SortField::new).collect())?;
        Ok(StreamDedup {
            lower,
            output,
            spec,
            conv,
            state: HashMap::new(),
            state_bytes: 0,
            max_event_time_ms: None,
            metrics: new_progress("dedupe"),
        })
    }

    /// The rows of `b` that are neither late nor duplicates, as the operator's output.
    fn admit(&mut self, b: &RecordBatch, wm: i64) -> Result<RecordBatch> {
        let n = b.num_rows();
        let keys = self
            .conv
            .convert_columns(&b.columns()[..self.spec.n_keys])?;
        let ts = match self.spec.delay_ms {
            Some(_) => Some(to_millis(b.column(self.spec.n_keys + self.spec.n_select))?),
            None => None,
        };
        if let Some(m) = ts.as_ref().and_then(datafusion::arrow::compute::max) {
            self.max_event_time_ms = Some(self.max_event_time_ms.map_or(m, |c| c.max(m)));
        }
        let mut keep = Vec::with_capacity(n);
        for i in 0..n {
            let t = ts.as_ref().map(|ts| ts.is_valid(i).then(|| ts.value(i)));
            if let Some(t) = t {
                if t.is_none_or(|t| t <= wm) {
                    self.metrics.num_rows_dropped_by_watermark += 1;
                    keep.push(false);
                    continue;
                }
            }
            let key = keys.row(i);
            if self.state.contains_key(key.as_ref()) {
                keep.push(false);
                continue;
            }
            let t = t.flatten().unwrap_or(i64::MAX);
            let expires = match (self.spec.within_watermark, self.spec.time_in_keys) {
                (true, _) => t.saturating_add(self.spec.delay_ms.unwrap_or(0)),
                (false, true) => t,
                (false, false) => i64::MAX,
            };
            self.state_bytes += key.as_ref().len() as u64 + 48;
            self.state.insert(key.as_ref().into(), expires);
            self.metrics.num_rows_updated += 1;
            keep.push(true);
        }
        let select = b.project(
            &(self.spec.n_keys..self.spec.n_keys + self.spec.n_select).collect::<Vec<_>>(),
        )?;
        let kept = filter_record_batch(&select, &BooleanArray::from(keep))?;
        to_slot(&self.output, &kept)
    }

    fn evict(&mut self, wm: i64) {
        let before = self.state.len();
        let mut freed = 0u64;
        self.state.retain(|k, expires| {
            let keep = *expires > wm;
            if !keep {
                freed += k.len() as u64 + 48;
            }
            keep
        });
        self.state_bytes = self.state_bytes.saturating_sub(freed);
        self.metrics.num_rows_removed = (before - self.state.len()) as u64;
    }
}

#[async_trait::async_trait]
impl StateOperator for StreamDedup {
    async fn run_batch(&mut self, ctx: &SessionContext, watermark_ms: i64) -> Result<()> {
        self.metrics = new_progress("dedupe");
        let input = crate::engine::execute(ctx, &self.lower).await?;
        let mut out = Vec::with_capacity(input.len());
        for b in &input {
            let kept = self.admit(b, watermark_ms)?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        self.evict(watermark_ms);
        self.output.set(out);
        Ok(())
    }

    fn clear_output(&self) {
        self.output.set(Vec::new());
    }

    fn watermark_ms(&self) -> Option<i64> {
        Some(self.max_event_time_ms? - self.spec.delay_ms?)
    }

    fn has_expired(&self, watermark_ms: i64) -> bool {
        self.state.values().any(|&expires| expires <= watermark_ms)
    }

    fn max_event_time_ms(&self) -> Option<i64> {
        self.max_event_time_ms
    }

    fn progress(&self) -> StateOperatorProgress {
        StateOperatorProgress {
            num_rows_total: self.state.len() as u64,
            memory_used_bytes: self.state_bytes,
            ..self.metrics.clone()
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.state_bytes as usize + 64);
        out.extend_from_slice(DEDUP_STATE_MAGIC);
        out.extend_from_slice(&self.max_event_time_ms.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        let mut keys: Vec<_> = self.state.iter().collect();
        keys.sort();
        for (k, expires) in keys {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&expires.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    fn restore(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let err = |m: &str| SqlError::Checkpoint {
            path: what.to_string(),
            message: m.to_string(),
        };
        if bytes.len() < DEDUP_STATE_MAGIC.len() + 20 {
            return Err(err("dedup state file is truncated"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(err("dedup state file checksum mismatch"));
        }
        let Some(rest) = body.strip_prefix(DEDUP_STATE_MAGIC) else {
            return Err(err("not a runnel dedup state file"));
        };
        let mut r = rest;
        let mut take = |n: usize| -> Result<&[u8]> {
            if r.len() < n {
                return Err(err("dedup state file is truncated"));
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let max = i64::from_le_bytes(take(8)?.try_into().expect("8"));
        let n = u64::from_le_bytes(take(8)?.try_into().expect("8"));
        let mut state = HashMap::new();
        let mut bytes_used = 0u64;
        for _ in 0..n {
            let len = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
            let key: Box<[u8]> = take(len)?.into();
            let expires = i64::from_le_bytes(take(8)?.try_into().expect("8"));
            bytes_used += len as u64 + 48;
            state.insert(key, expires);
        }
        if !r.is_empty() {
            return Err(err("trailing bytes in dedup state file"));
        }
        self.state = state;
        self.state_bytes = bytes_used;
        self.max_event_time_ms = (max != i64::MIN).then_some(max);
        Ok(())
    }
}

const DEDUP_STATE_MAGIC: &[u8] = b"RUNNEL-DEDUP-STATE-1\n";
