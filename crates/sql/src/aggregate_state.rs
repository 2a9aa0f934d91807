//! The state of a streaming aggregation: keyed state across micro-batches, event-time
//! windows (tumbling and sliding, expanded here; session windows merged), watermark-driven
//! eviction and late-row dropping, Spark's three output modes, and the state files
//! (full snapshots and deltas, Spark's changelog checkpointing). The operator the driver
//! runs (`aggregate::StreamAggregate`) owns one; a multi-process query (`group`) owns one
//! per state partition. Also serves `SELECT DISTINCT` planned as an aggregation with no
//! aggregate functions.
//!
//! State: one entry per (window start, group key), holding the accumulators. It is
//! bounded by the watermark when the key has an event-time column (the window, or the
//! watermarked column itself) and the mode is not complete; otherwise it grows with the
//! number of distinct keys. Not thread-safe: owned by one operator or task.

use crate::accumulator::{hll_estimate, Acc, AggKind, ArgData};
use crate::checkpoint::{checked_reader, Changelog, Reader, DEFAULT_DELTAS_PER_SNAPSHOT};
use crate::error::{Result, SqlError};
use crate::functions::{to_millis, WindowSpec};
use crate::output_mode::OutputMode;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, StructArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Fields, Float64Type, Int64Type, SchemaRef, TimeUnit,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// How a group key column relates to event time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GroupColumn {
    /// An ordinary key column.
    Key,
    /// `window(ts, ...)`: the input column holds ts; the output is the window struct.
    Window(WindowSpec),
}

/// What the operator needs to know about its query.
#[derive(Clone, Debug)]
pub struct AggregateSpec {
    /// One per group expression, in output order.
    pub groups: Vec<GroupColumn>,
    pub aggs: Vec<AggKind>,
    /// Index among the group columns of an event-time key column (unwindowed), if any.
    pub event_time_key: Option<usize>,
    /// Input column index (after groups and agg args) of the watermark column, if present.
    pub watermark_input: Option<usize>,
    /// Whether a watermark is declared on the column the keys use.
    pub has_watermark: bool,
    pub mode: OutputMode,
    /// The Arrow schema of the aggregate's output (DataFusion's Aggregate schema).
    pub output_schema: SchemaRef,
    /// Types of the input columns (group values, then one per aggregate argument).
    pub input_types: Vec<DataType>,
}

impl AggregateSpec {
    /// Input indices of the key columns (the group columns that are not a window).
    pub fn key_indices(&self) -> Vec<usize> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| matches!(g, GroupColumn::Key))
            .map(|(i, _)| i)
            .collect()
    }

    /// The row converter of the key columns at `indices` (their bytes are state keys,
    /// and what multi-process queries hash to pick a key's partition).
    pub fn key_converter(&self, indices: &[usize]) -> Result<RowConverter> {
        Ok(RowConverter::new(
            indices
                .iter()
                .map(|&i| SortField::new(self.input_types[i].clone()))
                .collect(),
        )?)
    }
}

#[derive(Clone, Debug)]
struct Entry {
    /// Event time that bounds this entry: the window end, or the key's event time.
    event_end: i64,
    accs: Vec<Acc>,
    /// Last batch that changed this entry, and the batch that created it.
    updated_batch: u64,
    created_batch: u64,
}

/// Per-batch figures for progress reporting (Spark's stateOperators).
#[derive(Clone, Debug, Default)]
pub struct StateMetrics {
    pub num_rows_total: u64,
    pub num_rows_updated: u64,
    pub num_rows_removed: u64,
    pub num_rows_dropped_by_watermark: u64,
    pub memory_used_bytes: u64,
}

/// The state and how batches change it. See the module docs.
pub struct AggregateState {
    spec: AggregateSpec,
    /// Key columns (group columns that are not windows).
    key_conv: RowConverter,
    key_indices: Vec<usize>,
    window: Option<(usize, WindowSpec)>,
    arg_convs: Vec<Option<RowConverter>>,
    /// (window start as ordered bytes) ++ key row bytes -> entry.
    state: HashMap<Box<[u8]>, Entry>,
    /// Session windows only: key row bytes -> starts of that key's open sessions.
    sessions: HashMap<Box<[u8]>, Vec<i64>>,
    max_event_time_ms: Option<i64>,
    metrics: StateMetrics,
    state_bytes: u64,
    /// Keys added, changed or removed since the last state file (Spark's changelog).
    touched: HashSet<Box<[u8]>>,
    /// When a state file is a full snapshot.
    cadence: crate::checkpoint::SnapshotCadence,
}

impl AggregateState {
    pub fn new(spec: AggregateSpec) -> Result<Self> {
        let n_groups = spec.groups.len();
        if spec.input_types.len() < n_groups + spec.aggs.len() {
            return Err(SqlError::Unsupported(
                "aggregate input is missing columns".into(),
            ));
        }
        let mut window = None;
        let mut key_indices = Vec::new();
        for (i, g) in spec.groups.iter().enumerate() {
            match g {
                GroupColumn::Window(w) => {
                    if window.is_some() {
                        return Err(SqlError::Unsupported(
                            "Multiple time window expressions would result in a cartesian product of rows, therefore they are currently not supported.".into(),
                        ));
                    }
                    if w.session && spec.mode == OutputMode::Update {
                        return Err(SqlError::Unsupported(
                            "Update output mode is not supported for streaming aggregation with session window".into(),
                        ));
                    }
                    window = Some((i, *w));
                }
                GroupColumn::Key => key_indices.push(i),
            }
        }
        let key_conv = spec.key_converter(&key_indices)?;
        let arg_convs = spec
            .aggs
            .iter()
            .enumerate()
            .map(|(j, k)| match k {
                AggKind::Min | AggKind::Max | AggKind::ApproxDistinct => {
                    RowConverter::new(vec![SortField::new(spec.input_types[n_groups + j].clone())])
                        .map(Some)
                }
                _ => Ok(None),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(AggregateState {
            spec,
            key_conv,
            key_indices,
            window,
            arg_convs,
            state: HashMap::new(),
            sessions: HashMap::new(),
            max_event_time_ms: None,
            metrics: StateMetrics::default(),
            state_bytes: 0,
            touched: HashSet::new(),
            cadence: crate::checkpoint::SnapshotCadence::new(DEFAULT_DELTAS_PER_SNAPSHOT),
        })
    }

    /// A full snapshot after `n` deltas; 0 writes only full snapshots (no changelog).
    pub fn set_deltas_per_snapshot(&mut self, n: u32) {
        self.cadence.every = n;
    }

    pub fn max_event_time_ms(&self) -> Option<i64> {
        self.max_event_time_ms
    }

    pub fn metrics(&self) -> StateMetrics {
        StateMetrics {
            num_rows_total: self.state.len() as u64,
            memory_used_bytes: self.state_bytes,
            ..self.metrics.clone()
        }
    }

    /// Whether entries would be evicted at watermark `wm` (a no-data batch is useful).
    pub fn has_expired(&self, wm: i64) -> bool {
        self.evicts() && self.state.values().any(|e| e.event_end <= wm)
    }

    fn evicts(&self) -> bool {
        self.spec.has_watermark
            && self.spec.mode != OutputMode::Complete
            && (self.window.is_some() || self.spec.event_time_key.is_some())
    }

    fn prepare_arg(&self, j: usize, col: &ArrayRef) -> Result<ArgData> {
        Ok(match self.spec.aggs[j] {
            AggKind::Count => ArgData::Valid(col.clone()),
            AggKind::SumInt => ArgData::I64(
                cast(col, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            AggKind::SumFloat | AggKind::Avg => ArgData::F64(
                cast(col, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            AggKind::Min | AggKind::Max | AggKind::ApproxDistinct => {
                let conv = self.arg_convs[j]
                    .as_ref()
                    .expect("row converter for min/max/approx");
                ArgData::Rows(
                    conv.convert_columns(std::slice::from_ref(col))?,
                    col.clone(),
                )
            }
        })
    }

    /// The max event time (ms) of `batch`'s rows, the time the watermark follows (what
    /// `update` folds into `max_event_time_ms`); None when no row has one.
    pub fn event_time_max(&self, batch: &RecordBatch) -> Result<Option<i64>> {
        let col = match (
            self.spec.watermark_input,
            &self.window,
            self.spec.event_time_key,
        ) {
            (Some(i), _, _) => i,
            (None, Some((i, _)), _) => *i,
            (None, None, Some(i)) => i,
            (None, None, None) => return Ok(None),
        };
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        Ok(datafusion::arrow::compute::max(&to_millis(
            batch.column(col),
        )?))
    }

    /// Starts a batch: clears the per-batch metrics.
    pub fn begin_batch(&mut self) {
        self.metrics = StateMetrics::default();
    }

    /// Folds one input batch into the state. `watermark_ms` is the batch's watermark
    /// (from the previous batches), used to drop late rows.
    pub fn update(
        &mut self,
        batch: &RecordBatch,
        watermark_ms: Option<i64>,
        batch_id: u64,
    ) -> Result<()> {
        let n_groups = self.spec.groups.len();
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let key_cols: Vec<ArrayRef> = self
            .key_indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let keys = self.key_conv.convert_columns(&key_cols)?;
        let args: Vec<ArgData> = (0..self.spec.aggs.len())
            .map(|j| self.prepare_arg(j, batch.column(n_groups + j)))
            .collect::<Result<_>>()?;
        let window_ts = match self.window {
            Some((i, _)) => Some(to_millis(batch.column(i))?),
            None => None,
        };
        let key_ts = match self.spec.event_time_key {
            Some(i) => Some(to_millis(batch.column(i))?),
            None => None,
        };
        // The watermark advances from every row that reaches the operator, late or not.
        let wm_col = match (self.spec.watermark_input, &window_ts, &key_ts) {
            (Some(i), _, _) => Some(to_millis(batch.column(i))?),
            (None, Some(w), _) => Some(w.clone()),
            (None, None, Some(k)) => Some(k.clone()),
            _ => None,
        };
        if let Some(m) = wm_col.as_ref().and_then(datafusion::arrow::compute::max) {
            self.max_event_time_ms = Some(self.max_event_time_ms.map_or(m, |c| c.max(m)));
        }
        let drop_late = self.evicts();
        let wm = watermark_ms.unwrap_or(i64::MIN);
        let accs_template: Vec<Acc> = self.spec.aggs.iter().map(|k| Acc::new(*k)).collect();
        let mut scratch: Vec<u8> = Vec::with_capacity(64);
        let touch = |state: &mut HashMap<Box<[u8]>, Entry>,
                     (bytes, touched): (&mut u64, &mut HashSet<Box<[u8]>>),
                     key: &[u8],
                     event_end: i64,
                     i: usize| {
            let entry = match state.get_mut(key) {
                Some(e) => {
                    if e.updated_batch != batch_id {
                        touched.insert(key.into());
                    }
                    e
                }
                None => {
                    touched.insert(key.into());
                    *bytes += key.len() as u64 + 64 + 16 * accs_template.len() as u64;
                    state.entry(key.into()).or_insert_with(|| Entry {
                        event_end,
                        accs: accs_template.clone(),
                        updated_batch: batch_id,
                        created_batch: batch_id,
                    })
                }
            };
            entry.updated_batch = batch_id;
            for (acc, arg) in entry.accs.iter_mut().zip(&args) {
                acc.update(arg, i);
            }
        };
        for i in 0..rows {
            let key = keys.row(i);
            match (&self.window, &window_ts) {
                (Some((_, spec)), Some(ts)) if spec.session => {
                    if ts.is_null(i) {
                        continue;
                    }
                    let (t, gap) = (ts.value(i), spec.size_ms);
                    // Spark: the row's session is [t, t + gap); late once its end passed.
                    if drop_late && t + gap <= wm {
                        self.metrics.num_rows_dropped_by_watermark += 1;
                        continue;
                    }
                    let start = self.merge_sessions(key.as_ref(), t, t + gap, &accs_template);
                    scratch.clear();
                    scratch.extend_from_slice(&session_key_prefix(start));
                    scratch.extend_from_slice(key.as_ref());
                    touch(
                        &mut self.state,
                        (&mut self.state_bytes, &mut self.touched),
                        &scratch,
                        t + gap,
                        i,
                    );
                }
                (Some((_, spec)), Some(ts)) => {
                    if ts.is_null(i) {
                        continue; // Spark: a null event time falls in no window
                    }
                    let t = ts.value(i);
                    for start in spec.window_starts(t) {
                        let end = start + spec.size_ms;
                        if drop_late && end <= wm {
                            self.metrics.num_rows_dropped_by_watermark += 1;
                            continue;
                        }
                        scratch.clear();
                        scratch.extend_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
                        scratch.extend_from_slice(key.as_ref());
                        touch(
                            &mut self.state,
                            (&mut self.state_bytes, &mut self.touched),
                            &scratch,
                            end,
                            i,
                        );
                    }
                }
                _ => {
                    let event_end = match &key_ts {
                        Some(ts) if ts.is_valid(i) => ts.value(i),
                        _ => i64::MAX,
                    };
                    if drop_late && event_end <= wm {
                        self.metrics.num_rows_dropped_by_watermark += 1;
                        continue;
                    }
                    scratch.clear();
                    scratch.extend_from_slice(&[0u8; 8]);
                    scratch.extend_from_slice(key.as_ref());
                    touch(
                        &mut self.state,
                        (&mut self.state_bytes, &mut self.touched),
                        &scratch,
                        event_end,
                        i,
                    );
                }
            }
        }
        Ok(())
    }

    /// Makes `[start, end)` one session of `key`: every open session of the key that
    /// overlaps or touches it is merged into a single entry (accumulators folded, range
    /// widened). Returns the merged session's start; the caller adds the row to it.
    fn merge_sessions(&mut self, key: &[u8], start: i64, end: i64, template: &[Acc]) -> i64 {
        let starts = self.sessions.entry(key.into()).or_default();
        let entry_key = |s: i64| -> Vec<u8> {
            let mut k = session_key_prefix(s).to_vec();
            k.extend_from_slice(key);
            k
        };
        let overlapping: Vec<i64> = starts
            .iter()
            .copied()
            .filter(|&s| {
                s <= end
                    && self
                        .state
                        .get(&entry_key(s)[..])
                        .is_some_and(|e| e.event_end >= start)
            })
            .collect();
        // The common case: the row falls in (or extends) one session that starts earlier.
        if let [only] = overlapping[..] {
            if only <= start {
                let k = entry_key(only);
                let e = self.state.get_mut(&k[..]).expect("indexed session");
                e.event_end = e.event_end.max(end);
                self.touched.insert(k.into());
                return only;
            }
        }
        let mut merged = Entry {
            event_end: end,
            accs: template.to_vec(),
            updated_batch: 0,
            created_batch: u64::MAX,
        };
        let mut new_start = start;
        for s in &overlapping {
            let k = entry_key(*s);
            if let Some(e) = self.state.remove(&k[..]) {
                self.touched.insert(k[..].into());
                self.state_bytes = self
                    .state_bytes
                    .saturating_sub(k.len() as u64 + 64 + 16 * e.accs.len() as u64);
                for (a, b) in merged.accs.iter_mut().zip(&e.accs) {
                    a.merge(b);
                }
                merged.event_end = merged.event_end.max(e.event_end);
                merged.created_batch = merged.created_batch.min(e.created_batch);
                new_start = new_start.min(*s);
            }
        }
        starts.retain(|s| !overlapping.contains(s));
        starts.push(new_start);
        if !overlapping.is_empty() {
            let k = entry_key(new_start);
            self.state_bytes += k.len() as u64 + 64 + 16 * merged.accs.len() as u64;
            self.touched.insert(k[..].into());
            self.state.insert(k.into(), merged);
        }
        new_start
    }

    /// Ends a batch: the rows to emit under the output mode, after evicting what the
    /// watermark closed.
    pub fn finish_batch(
        &mut self,
        watermark_ms: Option<i64>,
        batch_id: u64,
    ) -> Result<RecordBatch> {
        let wm = watermark_ms.unwrap_or(i64::MIN);
        let dedup = self.spec.aggs.is_empty();
        let mut emit: Vec<(&[u8], &Entry)> = Vec::new();
        let updated = self
            .state
            .values()
            .filter(|e| e.updated_batch == batch_id)
            .count() as u64;
        self.metrics.num_rows_updated = updated;
        let evicts = self.evicts();
        let mut expired: Vec<Box<[u8]>> = Vec::new();
        for (k, e) in &self.state {
            let expire = evicts && e.event_end <= wm;
            if expire {
                expired.push(k.clone());
            }
            let out = match self.spec.mode {
                OutputMode::Complete => true,
                OutputMode::Update => e.updated_batch == batch_id,
                OutputMode::Append if dedup => e.created_batch == batch_id,
                OutputMode::Append => expire,
            };
            if out {
                emit.push((k, e));
            }
        }
        emit.sort_by(|a, b| a.0.cmp(b.0));
        let batch = self.build_output(&emit)?;
        self.metrics.num_rows_removed = expired.len() as u64;
        for k in expired {
            if self.window.is_some_and(|(_, w)| w.session) {
                self.unindex_session(&k);
            }
            if let Some(e) = self.state.remove(&k) {
                self.state_bytes = self
                    .state_bytes
                    .saturating_sub(k.len() as u64 + 64 + 16 * e.accs.len() as u64);
            }
            self.touched.insert(k);
        }
        Ok(batch)
    }

    /// Removes a session entry's start from the per-key index.
    fn unindex_session(&mut self, entry_key: &[u8]) {
        let start =
            (u64::from_be_bytes(entry_key[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
        if let Some(v) = self.sessions.get_mut(&entry_key[8..]) {
            v.retain(|&s| s != start);
            if v.is_empty() {
                self.sessions.remove(&entry_key[8..]);
            }
        }
    }

    fn build_output(&self, emit: &[(&[u8], &Entry)]) -> Result<RecordBatch> {
        let schema = self.spec.output_schema.clone();
        let parser = self.key_conv.parser();
        let key_arrays = self
            .key_conv
            .convert_rows(emit.iter().map(|(k, _)| parser.parse(&k[8..])))?;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let mut key_iter = key_arrays.into_iter();
        for (i, g) in self.spec.groups.iter().enumerate() {
            let target = schema.field(i).data_type();
            match g {
                GroupColumn::Key => {
                    let a = key_iter.next().expect("one array per key column");
                    cols.push(cast(&a, target)?);
                }
                GroupColumn::Window(w) => {
                    let starts: TimestampMillisecondArray = emit
                        .iter()
                        .map(|(k, _)| {
                            let raw = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
                            Some((raw ^ (1 << 63)) as i64)
                        })
                        .collect();
                    let ends: TimestampMillisecondArray = if w.session {
                        emit.iter().map(|(_, e)| Some(e.event_end)).collect()
                    } else {
                        starts.iter().map(|s| s.map(|s| s + w.size_ms)).collect()
                    };
                    let fields = match target {
                        DataType::Struct(f) => f.clone(),
                        _ => Fields::from(vec![
                            Field::new(
                                "start",
                                DataType::Timestamp(TimeUnit::Millisecond, None),
                                true,
                            ),
                            Field::new(
                                "end",
                                DataType::Timestamp(TimeUnit::Millisecond, None),
                                true,
                            ),
                        ]),
                    };
                    let s = cast(&(Arc::new(starts) as ArrayRef), fields[0].data_type())?;
                    let e = cast(&(Arc::new(ends) as ArrayRef), fields[1].data_type())?;
                    cols.push(Arc::new(StructArray::try_new(fields, vec![s, e], None)?));
                }
            }
        }
        let n_groups = self.spec.groups.len();
        for (j, kind) in self.spec.aggs.iter().enumerate() {
            let target = schema.field(n_groups + j).data_type();
            let a: ArrayRef = match kind {
                AggKind::Count => Arc::new(Int64Array::from_iter_values(emit.iter().map(
                    |(_, e)| match &e.accs[j] {
                        Acc::Count(n) => *n,
                        _ => 0,
                    },
                ))),
                AggKind::SumInt => Arc::new(
                    emit.iter()
                        .map(|(_, e)| match &e.accs[j] {
                            Acc::SumInt(s) => *s,
                            _ => None,
                        })
                        .collect::<Int64Array>(),
                ),
                AggKind::SumFloat => Arc::new(
                    emit.iter()
                        .map(|(_, e)| match &e.accs[j] {
                            Acc::SumFloat(s) => *s,
                            _ => None,
                        })
                        .collect::<Float64Array>(),
                ),
                AggKind::Avg => Arc::new(
                    emit.iter()
                        .map(|(_, e)| match &e.accs[j] {
                            Acc::Avg(s, n) if *n > 0 => Some(s / *n as f64),
                            _ => None,
                        })
                        .collect::<Float64Array>(),
                ),
                AggKind::ApproxDistinct => Arc::new(Int64Array::from_iter_values(emit.iter().map(
                    |(_, e)| match &e.accs[j] {
                        Acc::Hll(r) => hll_estimate(r),
                        _ => 0,
                    },
                ))),
                AggKind::Min | AggKind::Max => {
                    let conv = self.arg_convs[j].as_ref().expect("converter");
                    let p = conv.parser();
                    let input_type = &self.spec.input_types[n_groups + j];
                    // Groups that saw only nulls have no value: build with a null placeholder.
                    let null_row =
                        conv.convert_columns(&[datafusion::arrow::array::new_null_array(
                            input_type, 1,
                        )])?;
                    let vals: Vec<&[u8]> = emit
                        .iter()
                        .map(|(_, e)| match &e.accs[j] {
                            Acc::Min(Some(v)) | Acc::Max(Some(v)) => v.as_ref(),
                            _ => null_row.row(0).data(),
                        })
                        .collect();
                    conv.convert_rows(vals.into_iter().map(|v| p.parse(v)))?
                        .pop()
                        .expect("one column")
                }
            };
            cols.push(cast(&a, target)?);
        }
        if cols.is_empty() {
            return Ok(RecordBatch::try_new_with_options(
                schema,
                vec![],
                &datafusion::arrow::record_batch::RecordBatchOptions::new()
                    .with_row_count(Some(emit.len())),
            )?);
        }
        // Nullability in DataFusion's schema may be stricter than our arrays; relax it.
        let relaxed: Vec<Field> = schema
            .fields()
            .iter()
            .zip(&cols)
            .map(|(f, c)| {
                f.as_ref()
                    .clone()
                    .with_nullable(f.is_nullable() || c.null_count() > 0)
            })
            .collect();
        let out_schema = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
            relaxed,
            schema.metadata().clone(),
        ));
        Ok(RecordBatch::try_new(out_schema, cols)?)
    }

    /// Serialises the whole state (a full snapshot).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.state_bytes as usize + 64);
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&self.max_event_time_ms.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        let mut keys: Vec<&Box<[u8]>> = self.state.keys().collect();
        keys.sort();
        for k in keys {
            encode_entry(&mut out, k, &self.state[k]);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Keeps the keys tracked for the next delta bounded (`checkpoint::bound_changes`).
    pub fn bound_changes(&mut self) {
        crate::checkpoint::bound_changes(&mut self.touched, self.state.len(), &mut self.cadence);
    }

    /// The state file for the batch just run, as Spark's changelog checkpointing writes
    /// it: the keys added, changed or removed since the last file (a delta), or every
    /// `minDeltasForSnapshot` deltas (and first) the whole state. So a batch costs in
    /// proportion to the keys it changed, and a restart applies at most
    /// `minDeltasForSnapshot` deltas to a snapshot.
    pub fn checkpoint(&mut self) -> Vec<u8> {
        let out = if self.cadence.next_is_full() {
            self.snapshot()
        } else {
            self.delta()
        };
        self.touched.clear();
        out
    }

    /// The keys touched since the last state file: the present ones with their entries,
    /// then the removed ones.
    fn delta(&self) -> Vec<u8> {
        let (present, removed) = crate::checkpoint::split_touched(&self.touched, &self.state);
        let mut out = Vec::new();
        out.extend_from_slice(crate::checkpoint::DELTA_MAGIC);
        out.extend_from_slice(&self.max_event_time_ms.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&(present.len() as u64).to_le_bytes());
        for k in present {
            encode_entry(&mut out, k, &self.state[k]);
        }
        out.extend_from_slice(&(removed.len() as u64).to_le_bytes());
        for k in removed {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// One entry as `encode_entry` wrote it, checked against this query's aggregates.
    fn decode_entry(&self, r: &mut Reader) -> Result<(Box<[u8]>, Entry)> {
        let what = r.what.clone();
        let err = |m: &str| SqlError::Checkpoint {
            path: what.clone(),
            message: m.to_string(),
        };
        let klen = r.u32()? as usize;
        let key: Box<[u8]> = r.bytes(klen)?.into();
        if key.len() < 8 {
            return Err(err("state key too short"));
        }
        let event_end = r.i64()?;
        let updated_batch = r.i64()? as u64;
        let created_batch = r.i64()? as u64;
        let nacc = r.u8()? as usize;
        if nacc != self.spec.aggs.len() {
            return Err(err(
                "state was written by a query with different aggregates",
            ));
        }
        let accs = (0..nacc)
            .map(|_| Acc::decode(r))
            .collect::<Result<Vec<_>>>()?;
        for (a, k) in accs.iter().zip(&self.spec.aggs) {
            if std::mem::discriminant(a) != std::mem::discriminant(&Acc::new(*k)) {
                return Err(err(
                    "state was written by a query with different aggregates",
                ));
            }
        }
        Ok((
            key,
            Entry {
                event_end,
                accs,
                updated_batch,
                created_batch,
            },
        ))
    }

    /// Rebuilds the per-key index of session starts from the state's keys.
    fn index_sessions(&mut self) {
        self.sessions.clear();
        if self.window.is_some_and(|(_, w)| w.session) {
            for k in self.state.keys() {
                let start =
                    (u64::from_be_bytes(k[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
                self.sessions.entry(k[8..].into()).or_default().push(start);
            }
        }
    }

    /// Replaces the state with a full snapshot. `what` names the file for errors.
    pub fn restore(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let mut r = checked_reader(bytes, STATE_MAGIC, what)?;
        let max = r.i64()?;
        let n = r.i64()? as u64;
        let mut state = HashMap::new();
        let mut bytes_used = 0u64;
        for _ in 0..n {
            let (key, entry) = self.decode_entry(&mut r)?;
            bytes_used += key.len() as u64 + 64 + 16 * entry.accs.len() as u64;
            state.insert(key, entry);
        }
        if r.pos != r.data.len() {
            return Err(SqlError::Checkpoint {
                path: what.to_string(),
                message: "trailing bytes in state file".into(),
            });
        }
        self.state = state;
        self.index_sessions();
        self.state_bytes = bytes_used;
        self.max_event_time_ms = (max != i64::MIN).then_some(max);
        self.touched.clear();
        self.cadence.restored(0);
        Ok(())
    }
}

/// One state entry: key length and bytes, event end, update and creation batches, the
/// accumulators.
fn encode_entry(out: &mut Vec<u8>, k: &[u8], e: &Entry) {
    out.extend_from_slice(&(k.len() as u32).to_le_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(&e.event_end.to_le_bytes());
    out.extend_from_slice(&e.updated_batch.to_le_bytes());
    out.extend_from_slice(&e.created_batch.to_le_bytes());
    out.push(e.accs.len() as u8);
    for a in &e.accs {
        a.encode(out);
    }
}

impl Changelog for AggregateState {
    fn cadence_mut(&mut self) -> &mut crate::checkpoint::SnapshotCadence {
        &mut self.cadence
    }

    fn restore_snapshot(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.restore(bytes, what)
    }

    fn apply_delta(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let mut r = checked_reader(bytes, crate::checkpoint::DELTA_MAGIC, what)?;
        let max = r.i64()?;
        let n = r.i64()? as u64;
        for _ in 0..n {
            let (key, entry) = self.decode_entry(&mut r)?;
            let klen = key.len() as u64;
            self.state_bytes += klen + 64 + 16 * entry.accs.len() as u64;
            if let Some(old) = self.state.insert(key, entry) {
                self.state_bytes = self
                    .state_bytes
                    .saturating_sub(klen + 64 + 16 * old.accs.len() as u64);
            }
        }
        let n = r.i64()? as u64;
        for _ in 0..n {
            let klen = r.u32()? as usize;
            let key = r.bytes(klen)?;
            if let Some(e) = self.state.remove(key) {
                self.state_bytes = self
                    .state_bytes
                    .saturating_sub(key.len() as u64 + 64 + 16 * e.accs.len() as u64);
            }
        }
        if r.pos != r.data.len() {
            return Err(SqlError::Checkpoint {
                path: what.to_string(),
                message: "trailing bytes in state delta".into(),
            });
        }
        self.max_event_time_ms = (max != i64::MIN).then_some(max);
        self.index_sessions();
        Ok(())
    }
}

const STATE_MAGIC: &[u8] = b"RUNNEL-STATE-1\n";

/// A window start as the ordered bytes that prefix its state keys.
fn session_key_prefix(start: i64) -> [u8; 8] {
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Changelog;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Schema;

    fn spec(mode: OutputMode, aggs: Vec<AggKind>) -> AggregateSpec {
        let window_t = DataType::Timestamp(TimeUnit::Millisecond, None);
        let mut fields = vec![
            Field::new("w", crate::functions::window_type(&window_t), true),
            Field::new("tag", DataType::Utf8, true),
        ];
        for (j, _) in aggs.iter().enumerate() {
            fields.push(Field::new(format!("a{j}"), DataType::Int64, true));
        }
        let mut input_types = vec![window_t, DataType::Utf8];
        input_types.extend(aggs.iter().map(|_| DataType::Int64));
        AggregateSpec {
            groups: vec![
                GroupColumn::Window(
                    WindowSpec::from_strings("window", &["10 seconds".into()]).unwrap(),
                ),
                GroupColumn::Key,
            ],
            aggs,
            event_time_key: None,
            watermark_input: None,
            has_watermark: true,
            mode,
            output_schema: Arc::new(Schema::new(fields)),
            input_types,
        }
    }

    fn input(ts: &[i64], tags: &[&str], vals: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("tag", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("v2", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(ts.to_vec())),
                Arc::new(StringArray::from(tags.to_vec())),
                Arc::new(Int64Array::from(vals.to_vec())),
                Arc::new(Int64Array::from(vals.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn append_mode_emits_closed_windows_once_and_drops_late_rows() {
        let mut agg =
            AggregateState::new(spec(OutputMode::Append, vec![AggKind::Count, AggKind::Max]))
                .unwrap();
        agg.begin_batch();
        agg.update(
            &input(&[1_000, 2_000, 12_000], &["a", "a", "b"], &[5, 7, 1]),
            None,
            0,
        )
        .unwrap();
        assert_eq!(agg.finish_batch(None, 0).unwrap().num_rows(), 0);
        // Watermark 10 s closes window [0, 10 s).
        agg.begin_batch();
        agg.update(&input(&[3_000], &["a"], &[9]), Some(10_000), 1)
            .unwrap();
        assert_eq!(agg.metrics().num_rows_dropped_by_watermark, 1);
        let out = agg.finish_batch(Some(10_000), 1).unwrap();
        assert_eq!(out.num_rows(), 1);
        assert_eq!(out.column(2).as_primitive::<Int64Type>().value(0), 2);
        assert_eq!(out.column(3).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(agg.metrics().num_rows_total, 1);
        // Nothing is emitted twice.
        agg.begin_batch();
        assert_eq!(agg.finish_batch(Some(10_000), 2).unwrap().num_rows(), 0);
    }

    #[test]
    fn changelog_writes_only_changed_keys_and_rebuilds_the_state() {
        let new = || {
            AggregateState::new(spec(OutputMode::Append, vec![AggKind::Count, AggKind::Max]))
                .unwrap()
        };
        let mut agg = new();
        agg.set_deltas_per_snapshot(2);
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let tags: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut files: Vec<(Vec<u8>, String)> = Vec::new();
        let run = |files: &mut Vec<(Vec<u8>, String)>,
                   agg: &mut AggregateState,
                   ts: i64,
                   tags: &[&str],
                   wm: Option<i64>,
                   b: u64| {
            agg.begin_batch();
            agg.update(
                &input(&vec![ts; tags.len()], tags, &vec![1; tags.len()]),
                wm,
                b,
            )
            .unwrap();
            agg.finish_batch(wm, b).unwrap();
            let bytes = agg.checkpoint();
            files.push((bytes.clone(), format!("state/{b}")));
            bytes
        };
        let full = run(&mut files, &mut agg, 1_000, &tags, None, 0);
        assert!(full.starts_with(STATE_MAGIC));
        // Ten keys change: the delta holds those ten.
        let d1 = run(&mut files, &mut agg, 2_000, &tags[..10], None, 1);
        assert!(d1.starts_with(crate::checkpoint::DELTA_MAGIC));
        assert!(d1.len() * 50 < full.len(), "{} vs {}", d1.len(), full.len());
        // The watermark closes the window: its 1000 keys leave the state, one arrives.
        let d2 = run(&mut files, &mut agg, 25_000, &["z"], Some(15_000), 2);
        assert!(d2.starts_with(crate::checkpoint::DELTA_MAGIC));
        assert_eq!(agg.state.len(), 1);
        let mut restored = new();
        restored.restore_chain(&files).unwrap();
        assert_eq!(restored.snapshot(), agg.snapshot());
        assert_eq!(restored.state_bytes, agg.state_bytes);
        // After two deltas, a full snapshot again.
        let third = run(&mut files, &mut agg, 26_000, &["z"], Some(15_000), 3);
        assert!(third.starts_with(STATE_MAGIC));
        // A damaged delta is refused, naming the file.
        let mut bad = files[..2].to_vec();
        let n = bad[1].0.len();
        bad[1].0[n - 6] ^= 1;
        let e = new().restore_chain(&bad).unwrap_err().to_string();
        assert!(e.contains("state/1") && e.contains("checksum"), "{e}");
        // With changelog checkpointing off, every file is a full snapshot.
        agg.set_deltas_per_snapshot(0);
        assert!(run(&mut files, &mut agg, 27_000, &["z"], Some(15_000), 4).starts_with(STATE_MAGIC));
    }

    #[test]
    fn update_and_complete_modes_and_snapshot_round_trip() {
        let mut agg = AggregateState::new(spec(
            OutputMode::Update,
            vec![AggKind::SumInt, AggKind::ApproxDistinct],
        ))
        .unwrap();
        agg.begin_batch();
        agg.update(
            &input(&[1_000, 2_000, 12_000], &["a", "a", "b"], &[5, 7, 1]),
            None,
            0,
        )
        .unwrap();
        assert_eq!(agg.finish_batch(None, 0).unwrap().num_rows(), 2);
        let snap = agg.snapshot();
        let mut restored = AggregateState::new(spec(
            OutputMode::Update,
            vec![AggKind::SumInt, AggKind::ApproxDistinct],
        ))
        .unwrap();
        restored.restore(&snap, "test").unwrap();
        assert_eq!(restored.snapshot(), snap);
        restored.begin_batch();
        restored
            .update(&input(&[13_000], &["b"], &[2]), None, 1)
            .unwrap();
        let out = restored.finish_batch(None, 1).unwrap();
        assert_eq!(out.num_rows(), 1);
        assert_eq!(out.column(2).as_primitive::<Int64Type>().value(0), 3);
        assert_eq!(out.column(3).as_primitive::<Int64Type>().value(0), 2);
        let mut bad = snap.clone();
        bad[20] ^= 1;
        assert!(restored.restore(&bad, "bad").is_err());
        assert!(restored.restore(&snap[..10], "short").is_err());
        let mut complete =
            AggregateState::new(spec(OutputMode::Complete, vec![AggKind::Count])).unwrap();
        complete
            .update(
                &input(&[1_000, 12_000], &["a", "b"], &[1, 1]),
                Some(100_000),
                0,
            )
            .unwrap();
        assert_eq!(
            complete.finish_batch(Some(100_000), 0).unwrap().num_rows(),
            2
        );
        assert_eq!(
            complete.finish_batch(Some(100_000), 1).unwrap().num_rows(),
            2
        );
    }

    fn session_spec(mode: OutputMode) -> AggregateSpec {
        let mut s = spec(mode, vec![AggKind::Count, AggKind::Max]);
        s.groups[0] = GroupColumn::Window(
            WindowSpec::from_strings("session_window", &["10 seconds".into()]).unwrap(),
        );
        s
    }

    fn sessions_of(out: &RecordBatch) -> Vec<(i64, i64, String, i64)> {
        let w = out.column(0).as_struct();
        let start = cast(w.column(0), &DataType::Int64).unwrap();
        let end = cast(w.column(1), &DataType::Int64).unwrap();
        let tag = out.column(1).as_string::<i32>();
        let n = out.column(2).as_primitive::<Int64Type>();
        let mut v: Vec<_> = (0..out.num_rows())
            .map(|i| {
                (
                    start.as_primitive::<Int64Type>().value(i),
                    end.as_primitive::<Int64Type>().value(i),
                    tag.value(i).to_string(),
                    n.value(i),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn session_windows_merge_across_batches_and_close_with_the_watermark() {
        let mut agg = AggregateState::new(session_spec(OutputMode::Append)).unwrap();
        // Two sessions of "a" ([1 s, 13 s) and [30 s, 40 s)) and one of "b" ([0, 10 s)).
        agg.begin_batch();
        agg.update(
            &input(
                &[1_000, 3_000, 30_000, 0],
                &["a", "a", "a", "b"],
                &[1, 2, 3, 4],
            ),
            None,
            0,
        )
        .unwrap();
        assert_eq!(agg.finish_batch(None, 0).unwrap().num_rows(), 0);
        assert_eq!(agg.metrics().num_rows_total, 3);
        // A row at 20 s bridges a's sessions: [1 s, 13 s) + [20 s, 30 s) + [30 s, 40 s).
        // Watermark 12 s closes b's session only.
        agg.begin_batch();
        agg.update(
            &input(&[20_000, 2_000], &["a", "b"], &[9, 9]),
            Some(12_000),
            1,
        )
        .unwrap();
        assert_eq!(
            agg.metrics().num_rows_dropped_by_watermark,
            1,
            "b at 2 s ends at 12 s: late"
        );
        let out = agg.finish_batch(Some(12_000), 1).unwrap();
        assert_eq!(sessions_of(&out), vec![(0, 10_000, "b".into(), 1)]);
        // a's [1 s, 13 s) and [20 s, 40 s) stay apart: 13 s < 20 s.
        assert_eq!(agg.metrics().num_rows_total, 2);
        let snap = agg.snapshot();
        let mut restored = AggregateState::new(session_spec(OutputMode::Append)).unwrap();
        restored.restore(&snap, "test").unwrap();
        // 12 s bridges them after a restart (the session index is rebuilt from the state).
        restored.begin_batch();
        restored
            .update(&input(&[12_000], &["a"], &[1]), Some(12_000), 2)
            .unwrap();
        assert_eq!(restored.metrics().num_rows_total, 1);
        let out = restored.finish_batch(Some(50_000), 2).unwrap();
        assert_eq!(sessions_of(&out), vec![(1_000, 40_000, "a".into(), 5)]);
        assert_eq!(
            out.column(3).as_primitive::<Int64Type>().value(0),
            9,
            "max merged"
        );
        assert_eq!(restored.metrics().num_rows_total, 0);
        let e = AggregateState::new(session_spec(OutputMode::Update))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains(
                "Update output mode is not supported for streaming aggregation with session window"
            ),
            "{e}"
        );
    }

    /// The spec of `tests/fixtures/aggregate-state-v1`: every aggregate kind, update mode.
    fn fixture_spec() -> AggregateSpec {
        spec(
            OutputMode::Update,
            vec![
                AggKind::Count,
                AggKind::SumInt,
                AggKind::Avg,
                AggKind::Min,
                AggKind::Max,
                AggKind::ApproxDistinct,
            ],
        )
    }

    /// State files written by the Runnel before the aggregation went behind the operator
    /// trait (`tests/fixtures/aggregate-state-v1`: a snapshot after batch 0, deltas after
    /// batches 1 and 2, and the full snapshot after batch 2) restore to the same state.
    #[test]
    fn restores_state_files_the_previous_version_wrote() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/aggregate-state-v1");
        let files: Vec<(Vec<u8>, String)> = (0..3)
            .map(|b| {
                (
                    std::fs::read(dir.join(b.to_string())).unwrap(),
                    format!("state/{b}"),
                )
            })
            .collect();
        assert!(files[0].0.starts_with(STATE_MAGIC));
        assert!(files[1].0.starts_with(crate::checkpoint::DELTA_MAGIC));
        assert!(files[2].0.starts_with(crate::checkpoint::DELTA_MAGIC));
        let mut agg = AggregateState::new(fixture_spec()).unwrap();
        agg.restore_chain(&files).unwrap();
        // The same state: it re-encodes to the snapshot the old version wrote.
        let old_snapshot = std::fs::read(dir.join("snapshot-after-2")).unwrap();
        assert_eq!(agg.snapshot(), old_snapshot);
        let mut from_snapshot = AggregateState::new(fixture_spec()).unwrap();
        from_snapshot
            .restore(&old_snapshot, "snapshot-after-2")
            .unwrap();
        assert_eq!(from_snapshot.snapshot(), old_snapshot);
        // What it holds: window [0 s, 10 s) left with watermark 11 s; b in [10 s, 20 s)
        // saw 1, 10 and 6; d and a one row each.
        assert_eq!(agg.max_event_time_ms(), Some(25_000));
        assert_eq!(agg.state.len(), 3);
        agg.begin_batch();
        let n = 1;
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(
                std::iter::once(Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ))
                .chain(std::iter::once(Field::new("tag", DataType::Utf8, true)))
                .chain((0..6).map(|j| Field::new(format!("v{j}"), DataType::Int64, true)))
                .collect::<Vec<_>>(),
            )),
            std::iter::once(Arc::new(TimestampMillisecondArray::from(vec![16_000; n])) as ArrayRef)
                .chain(std::iter::once(
                    Arc::new(StringArray::from(vec!["b"; n])) as ArrayRef
                ))
                .chain((0..6).map(|_| Arc::new(Int64Array::from(vec![2; n])) as ArrayRef))
                .collect(),
        )
        .unwrap();
        agg.update(&batch, Some(11_000), 3).unwrap();
        let out = agg.finish_batch(Some(11_000), 3).unwrap();
        assert_eq!(out.num_rows(), 1);
        let int = |c: usize| out.column(c).as_primitive::<Int64Type>().value(0);
        // count, sum, avg (19 / 4, in the spec's Int64 column), min, max, approx distinct.
        let got: Vec<i64> = (2..8).map(int).collect();
        assert_eq!(got, [4, 19, 4, 1, 10, 4]);
    }
}
