//! The stream-stream inner join (Spark's symmetric hash join): both sides buffer their
//! rows in state; each batch joins the new rows of one side with everything buffered on
//! the other (plus the other side's new rows), so every matching pair is emitted exactly
//! once, in the batch where its later row arrives.
//!
//! ```text
//!   output = join(L_new, R_state ++ R_new)  ∪  join(L_state, R_new)     (DataFusion)
//! ```
//!
//! Watermarks (Spark's rules): each side's watermark is its max event time minus its
//! delay; the query's watermark is the minimum over the sides. Rows at or below it are
//! late and dropped. A side's state is evicted with a time bound from the join condition:
//! if the condition implies `s.t >= o.t + c` (s this side's event time, o the other's),
//! no future row of the other side (`o.t > watermark`) can match a row with
//! `s.t <= watermark + c`, so such rows are removed. Without such a bound a side's state
//! grows without limit, as in Spark.
//!
//! State files follow Spark's changelog checkpointing, as the aggregation's: each batch
//! writes per side the rows added (Arrow IPC) and the row ids evicted since the last file,
//! and the row ids that became matched (an outer join's preserved side); every
//! `deltas_per_snapshot` batches, and first, the whole state. Row ids grow with each row
//! admitted, and a side's rows stay in row-id order, so the rows added since the last file
//! are a suffix of each side's rows.
//!
//! Not thread-safe: owned by the query's driver.

use crate::checkpoint::{checked_reader, Changelog, Reader, SnapshotCadence};
use crate::error::{Result, SqlError};
use crate::functions::to_millis;
use crate::operator::StateOperator;
use crate::progress::StateOperatorProgress;
use crate::script::WatermarkDecl;
use crate::table::SlotTable;
use datafusion::arrow::array::{new_null_array, ArrayRef, AsArray, BooleanArray, UInt64Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{
    BinaryExpr, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Operator,
};
use std::collections::HashSet;
use std::sync::Arc;

/// One side of the join as the planner sees it.
#[derive(Clone, Debug)]
pub struct JoinSideSpec {
    /// Index of the watermarked event-time column in the side's rows, and its delay.
    pub event_time: Option<(usize, i64)>,
    /// `c` in `this.t >= other.t + c`, the tightest such bound the condition implies.
    pub lower_bound_ms: Option<i64>,
}

/// The planned join: per-batch plans for each side's new rows, the join itself over slot
/// tables, and the table its output goes to for the rest of the query.
pub struct JoinPlan {
    pub left_input: LogicalPlan,
    pub right_input: LogicalPlan,
    /// Union(join(L_new, R_all), join(L_state, R_new)).
    pub join: LogicalPlan,
    pub left_new: Arc<SlotTable>,
    pub left_state: Arc<SlotTable>,
    pub right_new: Arc<SlotTable>,
    pub right_all: Arc<SlotTable>,
    pub output: Arc<SlotTable>,
    pub left: JoinSideSpec,
    pub right: JoinSideSpec,
    /// Inner, Left, Right or Full: the per-batch joins are inner; a preserved side's
    /// rows that never matched are written with nulls when they leave the state.
    pub join_type: JoinType,
    /// Columns per side (without the row id the state adds).
    pub left_width: usize,
    pub right_width: usize,
}

/// A slot table standing in for a plan with `schema`: a scan renamed to the same
/// (qualified) column names, so expressions over the original plan still resolve.
pub fn slot_for(schema: &DFSchema, name: &str) -> Result<(Arc<SlotTable>, LogicalPlan)> {
    slot_with_row_id(schema, name, None)
}

/// `slot_for`, plus (with `row_id`) a last UInt64 column of that name: the join state's
/// row ids, carried through the join to tell which rows matched.
pub fn slot_with_row_id(
    schema: &DFSchema,
    name: &str,
    row_id: Option<&str>,
) -> Result<(Arc<SlotTable>, LogicalPlan)> {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(format!("__c{i}"), f.data_type().clone(), true))
        .collect();
    if row_id.is_some() {
        fields.push(Field::new("__rid", DataType::UInt64, false));
    }
    let table = Arc::new(SlotTable::new(Arc::new(Schema::new(fields)), false, None));
    let mut renames: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            Expr::Column(Column::new(Some(name), format!("__c{i}")))
                .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    if let Some(rid) = row_id {
        renames.push(Expr::Column(Column::new(Some(name), "__rid")).alias(rid));
    }
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(table.clone()), None)?
        .project(renames)?
        .build()?;
    Ok((table, plan))
}

/// Re-wraps a batch in a slot table's schema (same columns, the slot's names).
pub fn to_slot(table: &SlotTable, b: &RecordBatch) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        table.schema_ref(),
        b.columns().to_vec(),
    )?)
}

/// A linear form `column + offset_ms` (column optional).
fn linear(e: &Expr) -> Option<(Option<Column>, i64)> {
    match e {
        Expr::Column(c) => Some((Some(c.clone()), 0)),
        Expr::Cast(c) => linear(&c.expr),
        Expr::TryCast(c) => linear(&c.expr),
        Expr::Alias(a) => linear(&a.expr),
        Expr::Literal(v, _) => interval_ms(v).map(|ms| (None, ms)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (lc, lo) = linear(left)?;
            let (rc, ro) = linear(right)?;
            match (op, lc, rc) {
                (Operator::Plus, c, None) | (Operator::Plus, None, c) => Some((c, lo + ro)),
                (Operator::Minus, c, None) => Some((c, lo - ro)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Milliseconds of a fixed-length interval literal (no months).
fn interval_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i.days as i64 * 86_400_000 + i.milliseconds as i64)
        }
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        ScalarValue::DurationSecond(Some(v)) => Some(v * 1000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(v / 1000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(v / 1_000_000),
        _ => None,
    }
}

/// Splits AND-ed conditions, BETWEEN into its two comparisons.
fn conjuncts(e: &Expr, out: &mut Vec<(Expr, Operator, Expr)>) {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(
                op,
                Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            ) =>
        {
            out.push((left.as_ref().clone(), *op, right.as_ref().clone()));
        }
        Expr::Between(b) if !b.negated => {
            out.push((
                b.expr.as_ref().clone(),
                Operator::GtEq,
                b.low.as_ref().clone(),
            ));
            out.push((
                b.expr.as_ref().clone(),
                Operator::LtEq,
                b.high.as_ref().clone(),
            ));
        }
        _ => {}
    }
}

/// From `conditions`, the tightest `c` with `a >= b + c` (a, b the two event-time
/// columns), or None.
pub fn lower_bound(conditions: &[Expr], a: &Column, b: &Column) -> Option<i64> {
    let mut parts = Vec::new();
    for c in conditions {
        conjuncts(c, &mut parts);
    }
    let same = |x: &Option<Column>, y: &Column| {
        x.as_ref().is_some_and(|x| {
            x.name == y.name
                && (x.relation.is_none() || y.relation.is_none() || x.relation == y.relation)
        })
    };
    let mut best: Option<i64> = None;
    for (l, op, r) in parts {
        let (Some((lc, lo)), Some((rc, ro))) = (linear(&l), linear(&r)) else {
            continue;
        };
        // l.col + lo  op  r.col + ro   <=>   l.col op r.col + (ro - lo)
        let k = ro - lo;
        let bound = if same(&lc, a) && same(&rc, b) {
            // a op b + k
            matches!(op, Operator::Gt | Operator::GtEq | Operator::Eq).then_some(k)
        } else if same(&lc, b) && same(&rc, a) {
            // b op a + k  <=>  a (reversed op) b - k
            matches!(op, Operator::Lt | Operator::LtEq | Operator::Eq).then_some(-k)
        } else {
            None
        };
        if let Some(k) = bound {
            best = Some(best.map_or(k, |c: i64| c.max(k)));
        }
    }
    best
}

/// The watermark declared on a column of `schema`: (index, delay, column).
pub fn side_watermark(
    schema: &DFSchema,
    watermarks: &[WatermarkDecl],
) -> Option<(usize, i64, Column)> {
    watermarks.iter().find_map(|w| {
        schema
            .iter()
            .enumerate()
            .find(|(_, (_, f))| f.name().eq_ignore_ascii_case(&w.column))
            .map(|(i, (q, f))| (i, w.delay_ms, Column::new(q.cloned(), f.name())))
    })
}

/// Which sides an outer join preserves (left, right).
fn preserved(t: JoinType) -> (bool, bool) {
    match t {
        JoinType::Left => (true, false),
        JoinType::Right => (false, true),
        JoinType::Full => (true, true),
        _ => (false, false),
    }
}

/// Spark's checks on a stream-stream join, before it is planned.
pub fn check_join_type(
    join_type: JoinType,
    left: &JoinSideSpec,
    right: &JoinSideSpec,
) -> Result<()> {
    // A preserved side's rows are written with nulls when they leave the state, so they
    // must leave it: a time bound on that side, and a watermark on the nullable side so
    // that no later row of it can still match.
    let evictable = |p: &JoinSideSpec, nullable: &JoinSideSpec| {
        p.event_time.is_some() && p.lower_bound_ms.is_some() && nullable.event_time.is_some()
    };
    let (name, ok) = match join_type {
        JoinType::Inner => return Ok(()),
        JoinType::Left => ("LeftOuter", evictable(left, right)),
        JoinType::Right => ("RightOuter", evictable(right, left)),
        JoinType::Full => ("FullOuter", evictable(left, right) && evictable(right, left)),
        JoinType::LeftSemi => {
            return Err(SqlError::Unsupported(
                "stream-stream LeftSemi joins are not supported by Runnel yet (inner and outer joins are)".into(),
            ))
        }
        other => {
            return Err(SqlError::Unsupported(format!(
                "{other} join between two streaming DataFrames/Datasets is not supported"
            )))
        }
    };
    if !ok {
        return Err(SqlError::Unsupported(format!(
            "Stream-stream {name} join between two streaming DataFrame/Datasets is not supported without a watermark in the join keys, or a watermark on the nullable side and an appropriate range condition; {}",
            crate::plan::WATERMARK_HINT
        )));
    }
    Ok(())
}

/// One side's buffered rows.
#[derive(Default)]
struct SideState {
    /// Buffered rows, with a last column of row ids, in row-id order.
    rows: Vec<RecordBatch>,
    max_event_time_ms: Option<i64>,
    next_row_id: u64,
    /// Ids of buffered rows that matched (kept for a preserved side of an outer join).
    matched: HashSet<u64>,
    /// `next_row_id` when the last state file was written: the rows from that id on are
    /// new since (what a delta adds).
    filed_next_row_id: u64,
    /// Ids below `filed_next_row_id` evicted since the last state file.
    evicted_since_filed: Vec<u64>,
    /// Ids that became matched since the last state file.
    matched_since_filed: Vec<u64>,
}

impl SideState {
    /// Notes that row `id` matched.
    fn note_matched(&mut self, id: u64) {
        if self.matched.insert(id) {
            self.matched_since_filed.push(id);
        }
    }

    /// The state was written (or restored): nothing is new since.
    fn filed(&mut self) {
        self.filed_next_row_id = self.next_row_id;
        self.evicted_since_filed.clear();
        self.matched_since_filed.clear();
    }

    /// The rows added since the last state file (row ids at or past `filed_next_row_id`):
    /// a suffix of each batch, since ids only grow.
    fn rows_since_filed(&self) -> Vec<RecordBatch> {
        let from = self.filed_next_row_id;
        let mut out = Vec::new();
        for b in &self.rows {
            let ids = row_ids(b);
            let first = ids.partition_point(|&id| id < from);
            if first < b.num_rows() {
                out.push(b.slice(first, b.num_rows() - first));
            }
        }
        out
    }

    /// Removes the rows whose ids are in `ranges` (sorted, disjoint `[start, end)`) and
    /// their matched marks.
    fn remove_ids(&mut self, ranges: &[(u64, u64)]) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        let gone = |id: u64| {
            let i = ranges.partition_point(|r| r.1 <= id);
            i < ranges.len() && ranges[i].0 <= id
        };
        let mut rows = Vec::with_capacity(self.rows.len());
        for b in std::mem::take(&mut self.rows) {
            let ids = row_ids(&b);
            if !ids.iter().any(|&id| gone(id)) {
                rows.push(b);
                continue;
            }
            let keep: BooleanArray = ids.iter().map(|&id| Some(!gone(id))).collect();
            let kept = filter_record_batch(&b, &keep)?;
            if kept.num_rows() > 0 {
                rows.push(kept);
            }
        }
        self.rows = rows;
        if !self.matched.is_empty() {
            self.matched.retain(|&id| !gone(id));
        }
        Ok(())
    }

    fn num_rows(&self) -> u64 {
        self.rows.iter().map(|b| b.num_rows() as u64).sum()
    }
    fn bytes(&self) -> u64 {
        self.rows
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum()
    }
}

/// The operator. See the module docs.
pub struct StreamJoin {
    plan: JoinPlan,
    left_spec: JoinSideSpec,
    right_spec: JoinSideSpec,
    left_schema: SchemaRef,
    right_schema: SchemaRef,
    left: SideState,
    right: SideState,
    /// The last batch's figures (totals are filled in by `progress`).
    metrics: StateOperatorProgress,
    /// When a state file is a full snapshot.
    cadence: SnapshotCadence,
    /// The changes since the last state file outgrew the state and were dropped: the
    /// next file is a full snapshot.
    snapshot_next: bool,
}

impl StreamJoin {
    pub fn new(plan: JoinPlan) -> StreamJoin {
        StreamJoin {
            left_spec: plan.left.clone(),
            right_spec: plan.right.clone(),
            left_schema: plan.left_state.schema_ref(),
            right_schema: plan.right_new.schema_ref(),
            left: SideState::default(),
            right: SideState::default(),
            metrics: new_progress("symmetricHashJoin"),
            cadence: SnapshotCadence::new(crate::checkpoint::DEFAULT_DELTAS_PER_SNAPSHOT),
            snapshot_next: false,
            plan,
        }
    }

    /// Drops late rows from a side's new rows and advances its max event time.
    /// Drops late rows from a side's new rows, advances its max event time, and gives
    /// each row an id; the rows come back in the side's slot schema.
    fn admit(&mut self, left: bool, rows: Vec<RecordBatch>, wm: i64) -> Result<Vec<RecordBatch>> {
        let (spec, side, schema) = if left {
            (&self.left_spec, &mut self.left, &self.left_schema)
        } else {
            (&self.right_spec, &mut self.right, &self.right_schema)
        };
        let mut out = Vec::with_capacity(rows.len());
        for b in rows {
            let kept = match spec.event_time {
                Some((col, _)) => {
                    let ts = to_millis(b.column(col))?;
                    if let Some(m) = datafusion::arrow::compute::max(&ts) {
                        side.max_event_time_ms =
                            Some(side.max_event_time_ms.map_or(m, |c| c.max(m)));
                    }
                    // Spark: a row whose event time is at or below the watermark is late.
                    let keep: BooleanArray =
                        ts.iter().map(|t| Some(t.is_some_and(|t| t > wm))).collect();
                    let kept = filter_record_batch(&b, &keep)?;
                    self.metrics.num_rows_dropped_by_watermark +=
                        (b.num_rows() - kept.num_rows()) as u64;
                    kept
                }
                None => b,
            };
            if kept.num_rows() == 0 {
                continue;
            }
            let first = side.next_row_id;
            side.next_row_id += kept.num_rows() as u64;
            let mut cols = kept.columns().to_vec();
            cols.push(Arc::new(UInt64Array::from_iter_values(
                first..side.next_row_id,
            )));
            out.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        Ok(out)
    }

    /// Runs one batch: fills the plan's slot tables, executes the join, adds the new
    /// rows to the state and evicts what the watermark and the time bounds allow.
    async fn join_batch(
        &mut self,
        ctx: &datafusion::prelude::SessionContext,
        watermark_ms: i64,
    ) -> Result<Vec<RecordBatch>> {
        self.metrics = new_progress("symmetricHashJoin");
        let p = &self.plan;
        let (left_new, left_state, right_new, right_all) = (
            p.left_new.clone(),
            p.left_state.clone(),
            p.right_new.clone(),
            p.right_all.clone(),
        );
        let (left_input, right_input, join) =
            (p.left_input.clone(), p.right_input.clone(), p.join.clone());
        let new_left = crate::operator::execute(ctx, &left_input).await?;
        let new_right = crate::operator::execute(ctx, &right_input).await?;
        let new_left = self.admit(true, new_left, watermark_ms)?;
        let new_right = self.admit(false, new_right, watermark_ms)?;
        self.metrics.num_rows_updated = new_left
            .iter()
            .chain(&new_right)
            .map(|b| b.num_rows() as u64)
            .sum();
        let mut right_all_rows = self.right.rows.clone();
        right_all_rows.extend(new_right.iter().cloned());
        left_new.set(new_left.clone());
        left_state.set(self.left.rows.clone());
        right_new.set(new_right.clone());
        right_all.set(right_all_rows);
        let out = crate::operator::execute(ctx, &join).await;
        for t in [&left_new, &left_state, &right_new, &right_all] {
            t.set(Vec::new());
        }
        let mut out = self.record_matches(out?)?;
        self.left.rows.extend(new_left);
        self.right.rows.extend(new_right);
        out.extend(self.evict(watermark_ms)?);
        self.bound_changes();
        Ok(out)
    }

    /// Keeps the changes tracked since the last state file within the state's size: a
    /// query without a checkpoint never writes one, and past that size a full snapshot
    /// costs less than a delta anyway. So they are dropped and the next file is full.
    fn bound_changes(&mut self) {
        let over = [&self.left, &self.right].iter().any(|s| {
            (s.evicted_since_filed.len() + s.matched_since_filed.len()) as u64
                > s.num_rows() + MAX_CHANGES_OVER_STATE
        });
        if over {
            self.snapshot_next = true;
            for side in [&mut self.left, &mut self.right] {
                side.evicted_since_filed = Vec::new();
                side.matched_since_filed = Vec::new();
            }
        }
    }

    /// Notes which rows of a preserved side matched, and drops the row-id columns.
    fn record_matches(&mut self, joined: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let (lw, rw) = (self.plan.left_width, self.plan.right_width);
        let (keep_left, keep_right) = preserved(self.plan.join_type);
        let mut out = Vec::with_capacity(joined.len());
        for b in joined {
            for (keep, col, side) in [
                (keep_left, lw, &mut self.left),
                (keep_right, lw + 1 + rw, &mut self.right),
            ] {
                if keep {
                    for &id in b.column(col).as_primitive::<UInt64Type>().values().iter() {
                        side.note_matched(id);
                    }
                }
            }
            let cols: Vec<usize> = (0..lw).chain(lw + 1..lw + 1 + rw).collect();
            out.push(b.project(&cols)?);
        }
        Ok(out)
    }

    /// A preserved side's evicted rows that never matched, padded with nulls for the
    /// other side's columns (the outer join's rows).
    fn unmatched(&self, left: bool, evicted: &RecordBatch) -> Result<Option<RecordBatch>> {
        let side = if left { &self.left } else { &self.right };
        let ids = evicted
            .column(evicted.num_columns() - 1)
            .as_primitive::<UInt64Type>();
        let keep: BooleanArray = ids
            .values()
            .iter()
            .map(|id| Some(!side.matched.contains(id)))
            .collect();
        let rows = filter_record_batch(evicted, &keep)?;
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let schema = self.plan.output.schema_ref();
        let (lw, n) = (self.plan.left_width, rows.num_rows());
        let nulls = |range: std::ops::Range<usize>| -> Vec<ArrayRef> {
            range
                .map(|i| new_null_array(schema.field(i).data_type(), n))
                .collect()
        };
        let own = rows.columns()[..rows.num_columns() - 1].to_vec();
        let cols = if left {
            own.into_iter()
                .chain(nulls(lw..schema.fields().len()))
                .collect()
        } else {
            nulls(0..lw).into_iter().chain(own).collect()
        };
        Ok(Some(RecordBatch::try_new(schema, cols)?))
    }

    /// Removes the rows no future row can match; returns the outer join's null-padded
    /// rows for those of a preserved side that never matched.
    fn evict(&mut self, wm: i64) -> Result<Vec<RecordBatch>> {
        let mut removed = 0u64;
        let mut outer = Vec::new();
        let (keep_left, keep_right) = preserved(self.plan.join_type);
        for left in [true, false] {
            let (spec, side, schema) = if left {
                (&self.left_spec, &self.left, &self.left_schema)
            } else {
                (&self.right_spec, &self.right, &self.right_schema)
            };
            let (Some((col, _)), Some(c)) = (spec.event_time, spec.lower_bound_ms) else {
                continue;
            };
            if side.rows.is_empty() || wm == i64::MIN {
                continue;
            }
            let threshold = wm.saturating_add(c);
            let all = concat_batches(schema, &side.rows)?;
            let ts = to_millis(all.column(col))?;
            let keep: BooleanArray = ts
                .iter()
                .map(|t| Some(t.is_some_and(|t| t > threshold)))
                .collect();
            let kept = filter_record_batch(&all, &keep)?;
            removed += (all.num_rows() - kept.num_rows()) as u64;
            let gone_mask = datafusion::arrow::compute::not(&keep)?;
            if kept.num_rows() < all.num_rows() {
                let side = if left {
                    &mut self.left
                } else {
                    &mut self.right
                };
                let ids = filter_record_batch(&all.project(&[all.num_columns() - 1])?, &gone_mask)?;
                let filed = side.filed_next_row_id;
                side.evicted_since_filed
                    .extend(row_ids(&ids).iter().copied().filter(|&id| id < filed));
            }
            if (left && keep_left) || (!left && keep_right) {
                let gone = filter_record_batch(&all, &gone_mask)?;
                if let Some(rows) = self.unmatched(left, &gone)? {
                    outer.push(rows);
                }
                let side = if left {
                    &mut self.left
                } else {
                    &mut self.right
                };
                for id in gone
                    .column(gone.num_columns() - 1)
                    .as_primitive::<UInt64Type>()
                    .values()
                {
                    side.matched.remove(id);
                }
            }
            let side = if left {
                &mut self.left
            } else {
                &mut self.right
            };
            side.rows = if kept.num_rows() > 0 {
                vec![kept]
            } else {
                vec![]
            };
        }
        self.metrics.num_rows_removed = removed;
        Ok(outer)
    }

    /// Serialises the state (for the checkpoint): both sides' rows as Arrow IPC streams.
    fn snapshot_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(JOIN_STATE_MAGIC);
        for (side, schema) in [
            (&self.left, &self.left_schema),
            (&self.right, &self.right_schema),
        ] {
            out.extend_from_slice(&side.max_event_time_ms.unwrap_or(i64::MIN).to_le_bytes());
            out.extend_from_slice(&side.next_row_id.to_le_bytes());
            let mut matched: Vec<u64> = side.matched.iter().copied().collect();
            matched.sort_unstable();
            out.extend_from_slice(&(matched.len() as u64).to_le_bytes());
            for id in matched {
                out.extend_from_slice(&id.to_le_bytes());
            }
            write_rows(&mut out, schema, &side.rows)?;
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// What changed since the last state file, per side: its clock, the ids evicted (as
    /// ranges), the ids that became matched, and the rows added.
    fn delta_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(crate::checkpoint::DELTA_MAGIC);
        out.extend_from_slice(JOIN_DELTA_TAG);
        for (side, schema) in [
            (&self.left, &self.left_schema),
            (&self.right, &self.right_schema),
        ] {
            out.extend_from_slice(&side.max_event_time_ms.unwrap_or(i64::MIN).to_le_bytes());
            out.extend_from_slice(&side.next_row_id.to_le_bytes());
            let ranges = id_ranges(side.evicted_since_filed.clone());
            out.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
            for (start, end) in ranges {
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
            let mut matched: Vec<u64> = side
                .matched_since_filed
                .iter()
                .copied()
                .filter(|id| side.matched.contains(id))
                .collect();
            matched.sort_unstable();
            out.extend_from_slice(&(matched.len() as u64).to_le_bytes());
            for id in matched {
                out.extend_from_slice(&id.to_le_bytes());
            }
            write_rows(&mut out, schema, &side.rows_since_filed())?;
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Replaces the state with a snapshot. `what` names the file for errors.
    fn restore_bytes(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let err = |m: String| SqlError::Checkpoint {
            path: what.to_string(),
            message: m,
        };
        if bytes.len() < JOIN_STATE_MAGIC.len() + 4 {
            return Err(err("join state file is truncated".into()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(err("join state file checksum mismatch".into()));
        }
        let Some(mut rest) = body.strip_prefix(JOIN_STATE_MAGIC) else {
            return Err(err("not a runnel join state file".into()));
        };
        let mut sides = Vec::new();
        for schema in [&self.left_schema, &self.right_schema] {
            let u64_at = |rest: &mut &[u8]| -> Result<u64> {
                if rest.len() < 8 {
                    return Err(err("join state file is truncated".into()));
                }
                let v = u64::from_le_bytes(rest[..8].try_into().expect("8"));
                *rest = &rest[8..];
                Ok(v)
            };
            let max = u64_at(&mut rest)? as i64;
            let next_row_id = u64_at(&mut rest)?;
            let n_matched = u64_at(&mut rest)?;
            if n_matched > rest.len() as u64 / 8 {
                return Err(err("join state file is truncated".into()));
            }
            let mut matched = HashSet::with_capacity(n_matched as usize);
            for _ in 0..n_matched {
                matched.insert(u64_at(&mut rest)?);
            }
            let len = u64_at(&mut rest)?;
            if (rest.len() as u64) < len {
                return Err(err("join state file is truncated".into()));
            }
            let (ipc, tail) = rest.split_at(len as usize);
            rest = tail;
            let mut side = SideState {
                rows: read_rows(ipc, schema, what)?,
                max_event_time_ms: (max != i64::MIN).then_some(max),
                next_row_id,
                matched,
                ..SideState::default()
            };
            side.filed();
            sides.push(side);
        }
        if !rest.is_empty() {
            return Err(err("trailing bytes in join state file".into()));
        }
        self.right = sides.pop().expect("two sides");
        self.left = sides.pop().expect("two sides");
        Ok(())
    }

    /// Applies a delta (`delta_bytes`) to the state.
    fn apply_delta_bytes(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let magic = [crate::checkpoint::DELTA_MAGIC, JOIN_DELTA_TAG].concat();
        let mut r = checked_reader(bytes, &magic, what)?;
        for left in [true, false] {
            let schema = if left {
                self.left_schema.clone()
            } else {
                self.right_schema.clone()
            };
            let max = r.i64()?;
            let next_row_id = r.i64()? as u64;
            let n = count(&mut r, 16)?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let (start, end) = (r.i64()? as u64, r.i64()? as u64);
                if start >= end || ranges.last().is_some_and(|&(_, e)| e > start) {
                    return Err(r.error("join state delta: evicted ids out of order"));
                }
                ranges.push((start, end));
            }
            let n = count(&mut r, 8)?;
            let mut matched = Vec::with_capacity(n);
            for _ in 0..n {
                matched.push(r.i64()? as u64);
            }
            let len = r.i64()? as u64;
            if len > (r.data.len() - r.pos) as u64 {
                return Err(r.error("join state delta is truncated"));
            }
            let rows = read_rows(r.bytes(len as usize)?, &schema, what)?;
            let side = if left {
                &mut self.left
            } else {
                &mut self.right
            };
            if rows
                .first()
                .and_then(|b| row_ids(b).first().copied())
                .is_some_and(|id| id < side.next_row_id)
            {
                return Err(r.error(
                    "join state delta adds rows the state before it already has (a delta out of order)",
                ));
            }
            side.remove_ids(&ranges)?;
            side.rows.extend(rows);
            side.matched.extend(matched);
            side.max_event_time_ms = (max != i64::MIN).then_some(max);
            side.next_row_id = next_row_id;
            side.filed();
        }
        if r.pos != r.data.len() {
            return Err(r.error("trailing bytes in join state delta"));
        }
        Ok(())
    }
}

/// The row ids of a side's rows (its last column).
fn row_ids(b: &RecordBatch) -> &[u64] {
    b.column(b.num_columns() - 1)
        .as_primitive::<UInt64Type>()
        .values()
}

/// Ids as sorted, disjoint `[start, end)` ranges.
fn id_ranges(mut ids: Vec<u64>) -> Vec<(u64, u64)> {
    ids.sort_unstable();
    ids.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for id in ids {
        match ranges.last_mut() {
            Some((_, end)) if *end == id => *end += 1,
            _ => ranges.push((id, id + 1)),
        }
    }
    ranges
}

/// A count read from a state file whose items take at least `item_bytes` each: refused
/// when the file is too short to hold them (so a damaged count allocates nothing).
fn count(r: &mut Reader<'_>, item_bytes: usize) -> Result<usize> {
    let n = r.i64()? as u64;
    if n > ((r.data.len() - r.pos) / item_bytes) as u64 {
        return Err(r.error("join state file is truncated"));
    }
    Ok(n as usize)
}

/// A side's rows as a length-prefixed Arrow IPC stream.
fn write_rows(out: &mut Vec<u8>, schema: &SchemaRef, rows: &[RecordBatch]) -> Result<()> {
    let mut ipc = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut ipc, schema)?;
        for b in rows {
            w.write(b)?;
        }
        w.finish()?;
    }
    out.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
    out.extend_from_slice(&ipc);
    Ok(())
}

/// Rows `write_rows` wrote, in the side's schema; `what` names the file for errors.
fn read_rows(ipc: &[u8], schema: &SchemaRef, what: &str) -> Result<Vec<RecordBatch>> {
    let err = |m: String| SqlError::Checkpoint {
        path: what.to_string(),
        message: m,
    };
    let reader = StreamReader::try_new(ipc, None).map_err(|e| err(format!("join state: {e}")))?;
    if reader.schema().fields().len() != schema.fields().len() {
        return Err(err(
            "join state was written by a query with different columns".into(),
        ));
    }
    reader
        .map(|b| {
            b.map_err(SqlError::from)
                .and_then(|b| Ok(RecordBatch::try_new(schema.clone(), b.columns().to_vec())?))
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|e| err(format!("join state: {e}")))
}

/// A fresh progress entry for operator `name`.
pub fn new_progress(name: &str) -> StateOperatorProgress {
    StateOperatorProgress {
        operator_name: name.into(),
        num_rows_total: 0,
        num_rows_updated: 0,
        num_rows_removed: 0,
        num_rows_dropped_by_watermark: 0,
        memory_used_bytes: 0,
    }
}

#[async_trait::async_trait]
impl StateOperator for StreamJoin {
    async fn run_batch(
        &mut self,
        ctx: &datafusion::prelude::SessionContext,
        _batch_id: u64,
        watermark_ms: i64,
    ) -> Result<()> {
        let out = self.join_batch(ctx, watermark_ms).await?;
        let out = out
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| to_slot(&self.plan.output, b))
            .collect::<Result<Vec<_>>>()?;
        self.plan.output.set(out);
        Ok(())
    }

    fn clear_output(&self) {
        self.plan.output.set(Vec::new());
    }

    /// The minimum over the watermarked sides, once every one of them has seen data.
    fn watermark_ms(&self) -> Option<i64> {
        let mut wm: Option<i64> = None;
        for (spec, side) in [
            (&self.left_spec, &self.left),
            (&self.right_spec, &self.right),
        ] {
            if let Some((_, delay)) = spec.event_time {
                let w = side.max_event_time_ms? - delay;
                wm = Some(wm.map_or(w, |c| c.min(w)));
            }
        }
        wm
    }

    fn has_expired(&self, watermark_ms: i64) -> bool {
        [
            (&self.left_spec, &self.left),
            (&self.right_spec, &self.right),
        ]
        .into_iter()
        .any(|(spec, side)| {
            let (Some((col, _)), Some(c)) = (spec.event_time, spec.lower_bound_ms) else {
                return false;
            };
            let threshold = watermark_ms.saturating_add(c);
            side.rows.iter().any(|b| {
                to_millis(b.column(col)).is_ok_and(|ts| {
                    datafusion::arrow::compute::min(&ts).is_some_and(|m| m <= threshold)
                })
            })
        })
    }

    fn max_event_time_ms(&self) -> Option<i64> {
        self.left
            .max_event_time_ms
            .max(self.right.max_event_time_ms)
    }

    fn progress(&self) -> StateOperatorProgress {
        StateOperatorProgress {
            num_rows_total: self.left.num_rows() + self.right.num_rows(),
            memory_used_bytes: self.left.bytes() + self.right.bytes(),
            ..self.metrics.clone()
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        self.snapshot_bytes()
    }

    fn restore(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.restore_bytes(bytes, what)
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        let out = if self.cadence.next_is_full() || self.snapshot_next {
            self.snapshot_bytes()?
        } else {
            self.delta_bytes()?
        };
        self.snapshot_next = false;
        self.left.filed();
        self.right.filed();
        Ok(out)
    }

    fn restore_chain(&mut self, files: &[(Vec<u8>, String)]) -> Result<()> {
        Changelog::restore_chain(self, files)
    }

    fn set_deltas_per_snapshot(&mut self, n: u32) {
        self.cadence.every = n;
    }
}

impl Changelog for StreamJoin {
    fn cadence_mut(&mut self) -> &mut SnapshotCadence {
        &mut self.cadence
    }

    fn restore_snapshot(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.restore_bytes(bytes, what)
    }

    fn apply_delta(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.apply_delta_bytes(bytes, what)
    }
}

const JOIN_STATE_MAGIC: &[u8] = b"RUNNEL-JOIN-STATE-2\n";
/// Changes (ids evicted or matched) tracked since the last state file beyond a side's
/// rows before they are dropped for a full snapshot (`bound_changes`).
const MAX_CHANGES_OVER_STATE: u64 = crate::checkpoint::MAX_CHANGES_OVER_STATE as u64;
/// After `checkpoint::DELTA_MAGIC`: a join's delta.
const JOIN_DELTA_TAG: &[u8] = b"join\n";

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ms(v: i64) -> Expr {
        Expr::Literal(ScalarValue::DurationMillisecond(Some(v)), None)
    }

    #[test]
    fn time_bounds_from_conditions() {
        let l = Column::new(Some("i"), "imp_time");
        let r = Column::new(Some("c"), "click_time");
        let between =
            col("c.click_time").between(col("i.imp_time"), col("i.imp_time") + ms(60_000));
        let cond = col("i.ad").eq(col("c.ad")).and(between);
        // click >= imp + 0: clicks are bounded below by impressions.
        assert_eq!(lower_bound(std::slice::from_ref(&cond), &r, &l), Some(0));
        // click <= imp + 60 s  <=>  imp >= click - 60 s.
        assert_eq!(
            lower_bound(std::slice::from_ref(&cond), &l, &r),
            Some(-60_000)
        );
        // Only an equality on keys: no bound.
        assert_eq!(lower_bound(&[col("i.ad").eq(col("c.ad"))], &l, &r), None);
        // a > b - 5 s written the other way round.
        let c2 = (col("c.click_time") - ms(5_000)).lt(col("i.imp_time"));
        assert_eq!(lower_bound(&[c2], &l, &r), Some(-5_000));
        assert!(lower_bound(&[lit(true)], &l, &r).is_none());
    }

    #[test]
    fn spark_errors_for_outer_joins_without_bounds() {
        let none = JoinSideSpec {
            event_time: None,
            lower_bound_ms: None,
        };
        let bounded = JoinSideSpec {
            event_time: Some((0, 1000)),
            lower_bound_ms: Some(0),
        };
        assert!(check_join_type(JoinType::Inner, &none, &none).is_ok());
        let e = check_join_type(JoinType::Left, &bounded, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Stream-stream LeftOuter join between two streaming DataFrame/Datasets is not supported without a watermark"), "{e}");
        let e = check_join_type(JoinType::Full, &bounded, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("FullOuter"), "{e}");
        // Left outer: the left side bounded, a watermark on the right.
        let watermarked = JoinSideSpec {
            event_time: Some((0, 1000)),
            lower_bound_ms: None,
        };
        assert!(check_join_type(JoinType::Left, &bounded, &watermarked).is_ok());
        assert!(check_join_type(JoinType::Right, &bounded, &watermarked).is_err());
        assert!(check_join_type(JoinType::Full, &bounded, &bounded).is_ok());
    }

    /// A join over two sides of (k STRING, t TIMESTAMP), both watermarked (1 s delay)
    /// with the bound `this.t >= other.t - 5 s`; no plans (the tests drive the state).
    fn test_join(join_type: JoinType) -> StreamJoin {
        use datafusion::arrow::datatypes::TimeUnit;
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let side = || {
            Arc::new(SlotTable::new(
                Arc::new(Schema::new(vec![
                    Field::new("k", DataType::Utf8, true),
                    Field::new("t", ts.clone(), true),
                    Field::new("__rid", DataType::UInt64, false),
                ])),
                false,
                None,
            ))
        };
        let output = Arc::new(SlotTable::new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("t", ts.clone(), true),
                Field::new("k2", DataType::Utf8, true),
                Field::new("t2", ts.clone(), true),
            ])),
            false,
            None,
        ));
        let empty = LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(DFSchema::empty()),
        });
        let spec = JoinSideSpec {
            event_time: Some((1, 1_000)),
            lower_bound_ms: Some(-5_000),
        };
        StreamJoin::new(JoinPlan {
            left_input: empty.clone(),
            right_input: empty.clone(),
            join: empty,
            left_new: side(),
            left_state: side(),
            right_new: side(),
            right_all: side(),
            output,
            left: spec.clone(),
            right: spec,
            join_type,
            left_width: 2,
            right_width: 2,
        })
    }

    fn side_rows(keys: impl Iterator<Item = (String, i64)>) -> RecordBatch {
        use datafusion::arrow::array::{StringArray, TimestampMillisecondArray};
        let (k, t): (Vec<String>, Vec<i64>) = keys.unzip();
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(k)) as ArrayRef),
            (
                "t",
                Arc::new(TimestampMillisecondArray::from(t)) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    /// One batch as `join_batch` runs it, with the join's matches made up: new rows are
    /// admitted, some rows (new and buffered) marked matched, then eviction.
    fn step(j: &mut StreamJoin, b: i64, rows: usize, wm: i64) {
        let mk = |side: &str| {
            side_rows((0..rows as i64).map(|i| (format!("{side}{b}-{i}"), b * 1_000 + i * 3)))
        };
        let l = j.admit(true, vec![mk("l")], wm).unwrap();
        let r = j.admit(false, vec![mk("r")], wm).unwrap();
        for (side, new) in [(&mut j.left, &l), (&mut j.right, &r)] {
            let old: Vec<u64> = side.rows.iter().flat_map(|b| row_ids(b).to_vec()).collect();
            for id in old.into_iter().filter(|id| id % 7 == 0) {
                side.note_matched(id);
            }
            for id in new
                .iter()
                .flat_map(|b| row_ids(b).to_vec())
                .filter(|id| id % 3 == 0)
            {
                side.note_matched(id);
            }
        }
        j.left.rows.extend(l);
        j.right.rows.extend(r);
        j.evict(wm).unwrap();
        j.bound_changes();
    }

    type SideView = (RecordBatch, Vec<u64>, Option<i64>, u64);

    /// A side's state, independent of how its rows fall into batches.
    fn view(j: &StreamJoin) -> [SideView; 2] {
        [(&j.left, &j.left_schema), (&j.right, &j.right_schema)].map(|(s, schema)| {
            let mut m: Vec<u64> = s.matched.iter().copied().collect();
            m.sort_unstable();
            (
                concat_batches(schema, &s.rows).unwrap(),
                m,
                s.max_event_time_ms,
                s.next_row_id,
            )
        })
    }

    /// Join state files are Spark's changelog: deltas of the rows added and evicted and
    /// the ids matched, a full snapshot every N; a snapshot and the deltas after it
    /// restore the state as it was, after every batch.
    #[test]
    fn changelog_deltas_restore_the_state_as_it_was() {
        let mut j = test_join(JoinType::Full);
        j.set_deltas_per_snapshot(4);
        let mut files: Vec<(Vec<u8>, String)> = Vec::new();
        let mut views = Vec::new();
        for b in 0..14i64 {
            // The watermark trails the rows by 3 s; rows 8 s behind leave the state.
            step(&mut j, b, 500, b * 1_000 - 3_000);
            files.push((j.checkpoint().unwrap(), format!("state/{b}")));
            views.push(view(&j));
        }
        let is_delta = |f: &[u8]| f.starts_with(crate::checkpoint::DELTA_MAGIC);
        let kinds: Vec<bool> = files.iter().map(|f| is_delta(&f.0)).collect();
        assert_eq!(kinds[..6], [false, true, true, true, true, false]);
        // Rows did leave the state, and some matched rows with them.
        assert!(
            views[13][0].0.num_rows() < 13 * 500,
            "{}",
            views[13][0].0.num_rows()
        );
        for b in 0..files.len() {
            let start = (0..=b).rev().find(|&i| !kinds[i]).unwrap();
            let mut restored = test_join(JoinType::Full);
            StateOperator::restore_chain(&mut restored, &files[start..=b]).unwrap();
            assert!(
                view(&restored) == views[b],
                "state after batch {b} differs once restored"
            );
        }
        // A delta costs the rows that changed: 500 added per side, the state ~8x that.
        let (snapshot, delta) = (files[10].0.len(), files[11].0.len());
        assert!(
            delta * 4 < snapshot,
            "delta {delta} bytes, snapshot {snapshot}"
        );
        // A damaged delta is refused naming its file; so is a delta applied twice.
        let mut bad = files[5..7].to_vec();
        let n = bad[1].0.len();
        bad[1].0[n - 9] ^= 1;
        let e = StateOperator::restore_chain(&mut test_join(JoinType::Full), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("state/6") && e.contains("checksum"), "{e}");
        let twice = [files[5].clone(), files[6].clone(), files[6].clone()];
        let e = StateOperator::restore_chain(&mut test_join(JoinType::Full), &twice)
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of order"), "{e}");
        // Without state files written (no checkpoint), the changes tracked stay bounded:
        // past the state's size plus MAX_CHANGES_OVER_STATE they are dropped, and the next
        // file is a full snapshot that restores the state.
        let mut unfiled = test_join(JoinType::Full);
        for b in 0..600i64 {
            step(&mut unfiled, b, 500, b * 1_000 - 3_000);
            let s = &unfiled.left;
            assert!(
                (s.evicted_since_filed.len() + s.matched_since_filed.len()) as u64
                    <= s.num_rows() + MAX_CHANGES_OVER_STATE
            );
        }
        assert!(unfiled.snapshot_next);
        let file = unfiled.checkpoint().unwrap();
        assert!(!is_delta(&file));
        let mut restored = test_join(JoinType::Full);
        StateOperator::restore_chain(&mut restored, &[(file, "state/599".into())]).unwrap();
        assert!(view(&restored) == view(&unfiled));
        // Changelog off: every file is a full snapshot.
        j.set_deltas_per_snapshot(0);
        step(&mut j, 14, 10, 11_000);
        assert!(!is_delta(&j.checkpoint().unwrap()));
    }
}
