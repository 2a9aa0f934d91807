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
//! are late and dropped. State files follow Spark's changelog checkpointing: each batch
//! writes the keys it added or forgot (a delta), and every `deltas_per_snapshot` batches
//! the whole state. Not thread-safe: owned by the query's driver.

use crate::checkpoint::Changelog;
use crate::checkpoint::{checked_reader, Reader};
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
use std::collections::{HashMap, HashSet};
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
    /// Keys added or forgotten since the last state file (what a delta holds).
    touched: HashSet<Box<[u8]>>,
    /// When a state file is a full snapshot.
    cadence: crate::checkpoint::SnapshotCadence,
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
            touched: HashSet::new(),
            cadence: crate::checkpoint::SnapshotCadence::new(
                crate::checkpoint::DEFAULT_DELTAS_PER_SNAPSHOT,
            ),
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
            self.touched.insert(key.as_ref().into());
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
        let touched = &mut self.touched;
        self.state.retain(|k, expires| {
            let keep = *expires > wm;
            if !keep {
                freed += k.len() as u64 + 48;
                touched.insert(k.clone());
            }
            keep
        });
        self.state_bytes = self.state_bytes.saturating_sub(freed);
        self.metrics.num_rows_removed = (before - self.state.len()) as u64;
    }

    /// The keys added or forgotten since the last state file: the present ones with
    /// their expiry, then the forgotten ones.
    fn delta(&self) -> Vec<u8> {
        let (present, removed) = crate::checkpoint::split_touched(&self.touched, &self.state);
        let mut out = Vec::new();
        out.extend_from_slice(crate::checkpoint::DELTA_MAGIC);
        out.extend_from_slice(DEDUP_DELTA_TAG);
        out.extend_from_slice(&self.max_event_time_ms.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&(present.len() as u64).to_le_bytes());
        for k in present {
            encode_entry(&mut out, k, Some(self.state[k]));
        }
        out.extend_from_slice(&(removed.len() as u64).to_le_bytes());
        for k in removed {
            encode_entry(&mut out, k, None);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A key (length, bytes) and, in a snapshot or among a delta's present keys, its expiry.
fn encode_entry(out: &mut Vec<u8>, key: &[u8], expires: Option<i64>) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    if let Some(e) = expires {
        out.extend_from_slice(&e.to_le_bytes());
    }
}

/// A key as `encode_entry` wrote it.
fn read_key(r: &mut Reader<'_>) -> Result<Box<[u8]>> {
    let len = r.u32()? as usize;
    Ok(r.bytes(len)?.into())
}

/// The end of a state file: nothing may follow what was read.
fn finish(r: &Reader<'_>) -> Result<()> {
    if r.pos == r.data.len() {
        Ok(())
    } else {
        Err(r.error("trailing bytes in dedup state file"))
    }
}

#[async_trait::async_trait]
impl StateOperator for StreamDedup {
    async fn run_batch(
        &mut self,
        ctx: &SessionContext,
        _batch_id: u64,
        watermark_ms: i64,
    ) -> Result<()> {
        self.metrics = new_progress("dedupe");
        let input = crate::operator::execute(ctx, &self.lower).await?;
        let mut out = Vec::with_capacity(input.len());
        for b in &input {
            let kept = self.admit(b, watermark_ms)?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        self.evict(watermark_ms);
        crate::checkpoint::bound_changes(&mut self.touched, self.state.len(), &mut self.cadence);
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
            encode_entry(&mut out, k, Some(*expires));
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    fn restore(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let mut r = checked_reader(bytes, DEDUP_STATE_MAGIC, what)?;
        let max = r.i64()?;
        let mut state = HashMap::new();
        let mut bytes_used = 0u64;
        for _ in 0..r.i64()? as u64 {
            let key = read_key(&mut r)?;
            bytes_used += key.len() as u64 + 48;
            state.insert(key, r.i64()?);
        }
        finish(&r)?;
        self.state = state;
        self.state_bytes = bytes_used;
        self.max_event_time_ms = (max != i64::MIN).then_some(max);
        self.touched.clear();
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        let out = if self.cadence.next_is_full() {
            self.snapshot()?
        } else {
            self.delta()
        };
        self.touched.clear();
        Ok(out)
    }

    fn restore_chain(&mut self, files: &[(Vec<u8>, String)]) -> Result<()> {
        Changelog::restore_chain(self, files)
    }

    fn set_deltas_per_snapshot(&mut self, n: u32) {
        self.cadence.every = n;
    }
}

impl Changelog for StreamDedup {
    fn cadence_mut(&mut self) -> &mut crate::checkpoint::SnapshotCadence {
        &mut self.cadence
    }

    fn restore_snapshot(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.restore(bytes, what)
    }

    fn apply_delta(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let magic = [crate::checkpoint::DELTA_MAGIC, DEDUP_DELTA_TAG].concat();
        let mut r = checked_reader(bytes, &magic, what)?;
        let max = r.i64()?;
        for _ in 0..r.i64()? as u64 {
            let key = read_key(&mut r)?;
            let expires = r.i64()?;
            if self.state.insert(key.clone(), expires).is_none() {
                self.state_bytes += key.len() as u64 + 48;
            }
        }
        for _ in 0..r.i64()? as u64 {
            let key = read_key(&mut r)?;
            if self.state.remove(&key).is_some() {
                self.state_bytes = self.state_bytes.saturating_sub(key.len() as u64 + 48);
            }
        }
        finish(&r)?;
        self.max_event_time_ms = (max != i64::MIN).then_some(max);
        Ok(())
    }
}

const DEDUP_STATE_MAGIC: &[u8] = b"RUNNEL-DEDUP-STATE-1\n";
/// After `DELTA_MAGIC` in a dedup delta (an aggregation's delta is not one).
const DEDUP_DELTA_TAG: &[u8] = b"dedup\n";

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::logical_expr::LogicalPlanBuilder;

    fn within_watermark() -> StreamDedup {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let spec = DedupSpec {
            n_keys: 1,
            n_select: 1,
            delay_ms: Some(1000),
            time_in_keys: false,
            within_watermark: true,
        };
        StreamDedup::new(
            LogicalPlanBuilder::empty(false).build().unwrap(),
            Arc::new(SlotTable::new(schema, false, None)),
            spec,
            vec![DataType::Int64],
        )
        .unwrap()
    }

    /// Rows (key, key, event time ms): the lower plan's keys, selected columns, time.
    fn rows(ids: std::ops::RangeInclusive<i64>, ms_per_id: i64) -> RecordBatch {
        let ids: Vec<i64> = ids.collect();
        let ts: TimestampMillisecondArray = ids.iter().map(|i| Some(i * ms_per_id)).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let id = Arc::new(Int64Array::from(ids));
        RecordBatch::try_new(schema, vec![id.clone(), id, Arc::new(ts)]).unwrap()
    }

    #[test]
    fn state_files_are_deltas_of_the_keys_a_batch_changed_between_snapshots() {
        let mut d = within_watermark();
        d.set_deltas_per_snapshot(3);
        d.admit(&rows(1..=1000, 10), 0).unwrap();
        d.evict(0);
        let snapshot = d.checkpoint().unwrap();
        assert!(!snapshot.starts_with(crate::checkpoint::DELTA_MAGIC));
        // 10 keys more, 50 forgotten (their first event time + delay under 1500).
        d.admit(&rows(1001..=1010, 10), 0).unwrap();
        d.evict(1500);
        assert_eq!(d.state.len(), 1010 - 50);
        let delta = d.checkpoint().unwrap();
        assert!(delta.starts_with(crate::checkpoint::DELTA_MAGIC));
        assert!(
            delta.len() * 10 < snapshot.len(),
            "{} vs {}",
            delta.len(),
            snapshot.len()
        );
        // The snapshot and the delta give the state back.
        let mut back = within_watermark();
        let chain = vec![
            (snapshot.clone(), "0".to_string()),
            (delta.clone(), "1".to_string()),
        ];
        Changelog::restore_chain(&mut back, &chain).unwrap();
        assert_eq!(back.state, d.state);
        assert_eq!(back.state_bytes, d.state_bytes);
        assert_eq!(back.max_event_time_ms, d.max_event_time_ms);
        // A duplicate of a remembered key is still dropped after the restore; a
        // forgotten one is admitted again.
        assert_eq!(back.admit(&rows(60..=60, 10), 0).unwrap().num_rows(), 0);
        assert_eq!(back.admit(&rows(7..=7, 10), 0).unwrap().num_rows(), 1);
        // Two more deltas, then a full snapshot again.
        for _ in 0..2 {
            assert!(d
                .checkpoint()
                .unwrap()
                .starts_with(crate::checkpoint::DELTA_MAGIC));
        }
        assert!(!d
            .checkpoint()
            .unwrap()
            .starts_with(crate::checkpoint::DELTA_MAGIC));
        // A damaged delta is an error naming the file, not a panic.
        let mut bad = delta.clone();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        let e = Changelog::restore_chain(
            &mut within_watermark(),
            &[(snapshot.clone(), "0".into()), (bad, "state/1".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("state/1") && e.contains("checksum"), "{e}");
        let e = Changelog::restore_chain(
            &mut within_watermark(),
            &[
                (snapshot, "0".into()),
                (delta[..20].to_vec(), "state/1".into()),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("state/1"), "{e}");
    }

    #[test]
    fn without_changelog_checkpointing_every_file_is_a_snapshot() {
        let mut d = within_watermark();
        d.set_deltas_per_snapshot(0);
        for i in 0..3 {
            d.admit(&rows(i * 10 + 1..=i * 10 + 10, 10), 0).unwrap();
            assert!(!d
                .checkpoint()
                .unwrap()
                .starts_with(crate::checkpoint::DELTA_MAGIC));
        }
    }
}
