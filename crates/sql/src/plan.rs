//! Turns a SELECT into a streaming plan: finds the one stateful operator (an aggregation
//! over streaming input), splits the logical plan around it, and applies Spark's rules
//! about output modes, sorting and unsupported operations.
//!
//! ```text
//!   upper plan (DataFusion, per batch)      e.g. Projection / Filter (HAVING) / Sort
//!        │ reads the slot table "__state"
//!   StreamAggregate (ours, keeps state)
//!        │ reads the columns of the lower plan
//!   lower plan (DataFusion, per batch)      Projection(keys, args) over the stream
//! ```
//! Without an aggregation the whole query is a stateless per-batch plan.

use crate::accumulator::AggKind;
use crate::aggregate::StreamAggregate;
use crate::aggregate_state::{AggregateSpec, GroupColumn};
use crate::dedup::{DedupSpec, StreamDedup, WITHIN_WATERMARK_MARKER};
use crate::error::{Result, SqlError};
use crate::functions::WindowSpec;
use crate::join::{
    check_join_type, lower_bound, side_watermark, slot_for, slot_with_row_id, JoinPlan,
    JoinSideSpec, StreamJoin,
};
use crate::operator::StateOperator;
use crate::output_mode::OutputMode;
use crate::script::WatermarkDecl;
use crate::table::SlotTable;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{
    cast, Distinct, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder,
};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Where Runnel's SQL has what Spark's `withWatermark` does, for errors about a missing
/// watermark.
pub const WATERMARK_HINT: &str = "Spark's withWatermark(\"ts\", \"10 seconds\") is Runnel's WATERMARK clause after the source: FROM src WATERMARK ts DELAY OF INTERVAL 10 SECONDS";

/// The planned streaming query.
pub struct StreamingPlan {
    /// Whole plan (stateless) or the part above the aggregation.
    pub upper: LogicalPlan,
    /// An aggregation's parts, which a multi-process query (`group`) runs itself, with a
    /// state per state partition; the single-process driver runs `operator`.
    pub aggregate: Option<AggregatePlan>,
    /// The stateful operator, if the query has one (at most one): an aggregation, a
    /// stream-stream join or a deduplication.
    pub operator: Option<Box<dyn StateOperator>>,
    pub mode: OutputMode,
    /// The watermark delay, if a declared watermark reaches the stateful operator.
    pub watermark_delay_ms: Option<i64>,
}

pub struct AggregatePlan {
    pub lower: LogicalPlan,
    pub spec: AggregateSpec,
    /// Where the operator's output goes for the upper plan.
    pub state_table: Arc<SlotTable>,
}

fn slot_of(plan: &LogicalPlan) -> Option<Arc<dyn datafusion::catalog::TableProvider>> {
    match plan {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source).ok(),
        _ => None,
    }
}

/// True if the plan reads a streaming source.
pub fn is_streaming(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|p| {
        if let Some(t) = slot_of(p) {
            if t.downcast_ref::<SlotTable>().is_some_and(|s| s.streaming) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        // Subqueries in expressions.
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn literal_str(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        Expr::Cast(c) => literal_str(&c.expr),
        Expr::TryCast(c) => literal_str(&c.expr),
        _ => None,
    }
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        Expr::Alias(a) => column_name(&a.expr),
        _ => None,
    }
}

/// Plans `sql` (already rewritten by the script parser) as a streaming query.
pub async fn plan_query(
    ctx: &SessionContext,
    sql: &str,
    mode: Option<OutputMode>,
    watermarks: &[WatermarkDecl],
) -> Result<StreamingPlan> {
    let raw = ctx.state().create_logical_plan(sql).await?;
    plan_logical(ctx, raw, mode, watermarks)
}

/// Plans a logical plan (from SQL or the DataFrame API) as a streaming query.
pub fn plan_logical(
    ctx: &SessionContext,
    raw: LogicalPlan,
    mode: Option<OutputMode>,
    watermarks: &[WatermarkDecl],
) -> Result<StreamingPlan> {
    let state = ctx.state();
    let plan = state
        .analyzer()
        .execute_and_check(raw, state.config_options(), |_, _| {})?;
    if !is_streaming(&plan) {
        return Err(SqlError::Unsupported(
            "the query reads no streaming source (declare one with CREATE TEMPORARY VIEW ... USING kafka OPTIONS (...))".into(),
        ));
    }
    check_unsupported(&plan)?;
    if let Some(planned) = plan_stream_join(ctx, &plan, mode, watermarks)? {
        return Ok(planned);
    }
    if let Some(planned) = plan_stream_dedup(ctx, &plan, mode, watermarks)? {
        return Ok(planned);
    }
    // The stateful aggregations: aggregates over streaming input.
    let mut aggs = Vec::new();
    plan.apply(|p| {
        if let LogicalPlan::Aggregate(a) = p {
            if is_streaming(&a.input) {
                aggs.push(a.clone());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if aggs.len() > 1 {
        return Err(SqlError::Unsupported(
            "Multiple streaming aggregations are not supported with streaming DataFrames/Datasets"
                .into(),
        ));
    }
    let Some(agg) = aggs.pop() else {
        let mode = mode.unwrap_or(OutputMode::Append);
        if mode == OutputMode::Complete {
            return Err(SqlError::Unsupported(
                "Complete output mode not supported when there are no streaming aggregations on streaming DataFrames/Datasets".into(),
            ));
        }
        if has_sort(&plan) {
            return Err(sorting_unsupported());
        }
        let upper = state.optimize(&plan)?;
        return Ok(StreamingPlan {
            upper,
            aggregate: None,
            operator: None,
            mode,
            watermark_delay_ms: None,
        });
    };
    let mode = mode.unwrap_or(OutputMode::Append);
    // Lower plan: keys and aggregate arguments as plain columns.
    let input_schema = agg.input.schema().clone();
    let mut exprs: Vec<Expr> = Vec::new();
    let mut groups = Vec::new();
    let mut event_time_key = None;
    let mut wm_delay = None;
    let find_wm = |name: &str| {
        watermarks
            .iter()
            .find(|w| w.column.eq_ignore_ascii_case(name))
    };
    for (i, g) in agg.group_expr.iter().enumerate() {
        let g_inner = match g {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        match g_inner {
            Expr::GroupingSet(_) => {
                return Err(SqlError::Unsupported(
                    "GROUPING SETS / CUBE / ROLLUP are not supported on streams".into(),
                ))
            }
            Expr::ScalarFunction(f)
                if f.func.name() == "window" || f.func.name() == "session_window" =>
            {
                let strs: Option<Vec<String>> = f.args[1..].iter().map(literal_str).collect();
                let strs = strs.ok_or_else(|| {
                    SqlError::Query(format!(
                        "{}: durations must be string literals",
                        f.func.name()
                    ))
                })?;
                let spec = WindowSpec::from_strings(f.func.name(), &strs)?;
                if let Some(w) = column_name(&f.args[0]).and_then(find_wm) {
                    wm_delay = Some(w.delay_ms);
                }
                exprs.push(
                    cast(
                        f.args[0].clone(),
                        DataType::Timestamp(TimeUnit::Millisecond, None),
                    )
                    .alias(format!("__g{i}")),
                );
                groups.push(GroupColumn::Window(spec));
            }
            other => {
                if let Some(w) = column_name(other).and_then(find_wm) {
                    wm_delay = Some(w.delay_ms);
                    event_time_key = Some(i);
                }
                exprs.push(other.clone().alias(format!("__g{i}")));
                groups.push(GroupColumn::Key);
            }
        }
    }
    let mut kinds = Vec::new();
    for (j, a) in agg.aggr_expr.iter().enumerate() {
        let inner = match a {
            Expr::Alias(al) => al.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(f) = inner else {
            return Err(SqlError::Unsupported(format!(
                "unsupported aggregate expression {a}"
            )));
        };
        let p = &f.params;
        if p.distinct {
            return Err(SqlError::Unsupported(
                "Distinct aggregations are not supported on streaming DataFrames/Datasets. Consider using approx_count_distinct() instead.".into(),
            ));
        }
        if p.filter.is_some() || !p.order_by.is_empty() || p.args.len() > 1 {
            return Err(SqlError::Unsupported(format!("aggregate {} with FILTER, ORDER BY or several arguments is not supported on streams", f.func.name())));
        }
        let arg = p
            .args
            .first()
            .cloned()
            .unwrap_or(Expr::Literal(ScalarValue::Int64(Some(1)), None));
        let arg_type = arg.get_type(&input_schema)?;
        let kind = AggKind::from_name(f.func.name(), arg_type.is_integer()).ok_or_else(|| {
            SqlError::Unsupported(format!(
                "aggregate function {} is not supported on streams (count, sum, avg, min, max, approx_count_distinct are)",
                f.func.name()
            ))
        })?;
        let arg = match kind {
            AggKind::SumInt => cast(arg, DataType::Int64),
            AggKind::SumFloat | AggKind::Avg => cast(arg, DataType::Float64),
            _ => arg,
        };
        exprs.push(arg.alias(format!("__a{j}")));
        kinds.push(kind);
    }
    // The watermark column itself, so the watermark advances even if no key uses it.
    let mut watermark_input = None;
    if let Some(w) = watermarks.first() {
        if let Some((q, f)) = input_schema
            .iter()
            .find(|(_, f)| f.name().eq_ignore_ascii_case(&w.column))
        {
            watermark_input = Some(exprs.len() - groups.len());
            exprs.push(Expr::Column(Column::from((q, f))).alias("__wm"));
            if wm_delay.is_none() {
                wm_delay = Some(w.delay_ms);
            }
        }
    }
    let has_watermark = wm_delay.is_some()
        && (groups.iter().any(|g| matches!(g, GroupColumn::Window(_))) || event_time_key.is_some());
    let is_dedup = kinds.is_empty();
    if mode == OutputMode::Append && !has_watermark && !is_dedup {
        return Err(SqlError::Unsupported(
            format!("Append output mode not supported when there are streaming aggregations on streaming DataFrames/DataSets without watermark; {WATERMARK_HINT}"),
        ));
    }
    let lower = LogicalPlanBuilder::from(agg.input.as_ref().clone())
        .project(exprs)?
        .build()?;
    let lower = state.optimize(&lower)?;
    let input_types: Vec<DataType> = lower
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    // watermark_input is relative to the argument columns; make it absolute.
    let watermark_input = watermark_input.map(|k| groups.len() + k);
    let output_schema: SchemaRef = Arc::new(agg.schema.as_arrow().clone());
    // Upper plan: the aggregation replaced by a scan of its output.
    let (state_table, replacement) = slot_for(&agg.schema, "__state")?;
    let upper = replace_first(
        plan,
        &replacement,
        |p| matches!(p, LogicalPlan::Aggregate(a) if a.schema == agg.schema && is_streaming(&a.input)),
    )?;
    if has_sort(&upper) && mode != OutputMode::Complete {
        return Err(sorting_unsupported());
    }
    if is_streaming(&upper) {
        return Err(SqlError::Unsupported(
            "a streaming source is read both below and above the aggregation".into(),
        ));
    }
    let upper = state.optimize(&upper)?;
    let spec = AggregateSpec {
        groups,
        aggs: kinds,
        event_time_key,
        watermark_input,
        has_watermark,
        mode,
        output_schema,
        input_types,
    };
    let operator =
        StreamAggregate::new(lower.clone(), spec.clone(), state_table.clone(), wm_delay)?;
    Ok(StreamingPlan {
        upper,
        aggregate: Some(AggregatePlan {
            lower,
            spec,
            state_table,
        }),
        operator: Some(Box::new(operator)),
        mode,
        watermark_delay_ms: wm_delay,
    })
}

/// Plans a query with a stream-stream join (None if it has none): the join becomes the
/// stateful operator (`join.rs`), and the rest of the query reads its output.
fn plan_stream_join(
    ctx: &SessionContext,
    plan: &LogicalPlan,
    mode: Option<OutputMode>,
    watermarks: &[WatermarkDecl],
) -> Result<Option<StreamingPlan>> {
    let mut joins = Vec::new();
    let mut streaming_aggregate = false;
    let mut above = Vec::new();
    plan.apply(|p| {
        match p {
            LogicalPlan::Join(j) if is_streaming(&j.left) && is_streaming(&j.right) => {
                joins.push(j.clone());
            }
            LogicalPlan::Aggregate(a) if is_streaming(&a.input) => streaming_aggregate = true,
            // A WHERE right above the join bounds it as much as its ON clause does.
            LogicalPlan::Filter(f) => {
                if let LogicalPlan::Join(under) = f.input.as_ref() {
                    above.push((f.predicate.clone(), under.clone()));
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(j) = joins.first().cloned() else {
        return Ok(None);
    };
    if joins.len() > 1 {
        return Err(SqlError::Unsupported(
            "more than one stream-stream join in a query is not supported yet".into(),
        ));
    }
    if streaming_aggregate {
        return Err(SqlError::Unsupported(
            "aggregations over a stream-stream join are not supported yet".into(),
        ));
    }
    let mode = mode.unwrap_or(OutputMode::Append);
    if mode != OutputMode::Append {
        return Err(SqlError::Unsupported(format!(
            "Join between two streaming DataFrames/Datasets is not supported in {} output mode, only in Append output mode",
            mode.name()
        )));
    }
    if has_sort(plan) {
        return Err(sorting_unsupported());
    }
    let mut conditions: Vec<Expr> = above
        .into_iter()
        .filter(|(_, under)| under == &j)
        .map(|(predicate, _)| predicate)
        .collect();
    if let Some(f) = &j.filter {
        conditions.push(f.clone());
    }
    conditions.extend(j.on.iter().map(|(l, r)| l.clone().eq(r.clone())));
    let wl = side_watermark(j.left.schema(), watermarks);
    let wr = side_watermark(j.right.schema(), watermarks);
    let bound = |a: &Option<(usize, i64, Column)>, b: &Option<(usize, i64, Column)>| match (a, b) {
        (Some(a), Some(b)) => lower_bound(&conditions, &a.2, &b.2),
        _ => None,
    };
    let left = JoinSideSpec {
        event_time: wl.as_ref().map(|w| (w.0, w.1)),
        lower_bound_ms: bound(&wl, &wr),
    };
    let right = JoinSideSpec {
        event_time: wr.as_ref().map(|w| (w.0, w.1)),
        lower_bound_ms: bound(&wr, &wl),
    };
    check_join_type(j.join_type, &left, &right)?;
    let state = ctx.state();
    // The state's rows carry row ids through the join (to tell which rows matched).
    let (l, r) = (j.left.schema(), j.right.schema());
    let (left_new, ln) = slot_with_row_id(l, "__join_left_new", Some("__rid_l"))?;
    let (left_state, ls) = slot_with_row_id(l, "__join_left_state", Some("__rid_l"))?;
    let (right_new, rn) = slot_with_row_id(r, "__join_right_new", Some("__rid_r"))?;
    let (right_all, ra) = slot_with_row_id(r, "__join_right_all", Some("__rid_r"))?;
    // Each batch joins inner; the operator adds an outer join's null-padded rows.
    let mut inner = j.clone();
    inner.join_type = datafusion::logical_expr::JoinType::Inner;
    let original = LogicalPlan::Join(inner);
    let exprs = original.expressions();
    let first = original.with_new_exprs(exprs.clone(), vec![ln, ra])?;
    let second = original.with_new_exprs(exprs, vec![ls, rn])?;
    let join = LogicalPlanBuilder::from(first).union(second)?.build()?;
    let join = state.optimize(&join)?;
    let (output, out_scan) = slot_for(&j.schema, "__join_out")?;
    let upper = replace_first(
        plan.clone(),
        &out_scan,
        |p| matches!(p, LogicalPlan::Join(x) if x == &j),
    )?;
    let upper = state.optimize(&upper)?;
    let delay = [&wl, &wr]
        .iter()
        .filter_map(|w| w.as_ref().map(|w| w.1))
        .min();
    Ok(Some(StreamingPlan {
        upper,
        aggregate: None,
        operator: Some(Box::new(StreamJoin::new(JoinPlan {
            left_input: state.optimize(&j.left)?,
            right_input: state.optimize(&j.right)?,
            join,
            left_new,
            left_state,
            right_new,
            right_all,
            output,
            left,
            right,
            join_type: j.join_type,
            left_width: j.left.schema().fields().len(),
            right_width: j.right.schema().fields().len(),
        }))),
        mode,
        watermark_delay_ms: delay,
    }))
}

/// Plans a query that deduplicates a stream (None if it does not): `SELECT DISTINCT`,
/// `SELECT DISTINCT ON (keys)` and `... WITHIN WATERMARK` become the dedup operator
/// (`dedup.rs`), and the rest of the query reads its output.
fn plan_stream_dedup(
    ctx: &SessionContext,
    plan: &LogicalPlan,
    mode: Option<OutputMode>,
    watermarks: &[WatermarkDecl],
) -> Result<Option<StreamingPlan>> {
    let mut found = Vec::new();
    let mut streaming_aggregate = false;
    plan.apply(|p| {
        match p {
            LogicalPlan::Distinct(d) if is_streaming(d.input()) => found.push(d.clone()),
            LogicalPlan::Aggregate(a) if is_streaming(&a.input) => streaming_aggregate = true,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(distinct) = found.first().cloned() else {
        return Ok(None);
    };
    if found.len() > 1 || streaming_aggregate {
        return Err(SqlError::Unsupported(
            "a deduplication together with another deduplication or an aggregation is not supported yet".into(),
        ));
    }
    let mode = mode.unwrap_or(OutputMode::Append);
    if mode == OutputMode::Complete {
        return Err(SqlError::Unsupported(
            "Complete output mode not supported when there are no streaming aggregations on streaming DataFrames/Datasets".into(),
        ));
    }
    if has_sort(plan) {
        return Err(sorting_unsupported());
    }
    let marker = |e: &Expr| literal_str(e).is_some_and(|s| s == WITHIN_WATERMARK_MARKER);
    let (input, keys, select, schema, within) = match &distinct {
        Distinct::All(input) => {
            let cols: Vec<Expr> = input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            (
                input.clone(),
                cols.clone(),
                cols,
                input.schema().clone(),
                false,
            )
        }
        Distinct::On(d) => {
            if d.sort_expr.is_some() {
                return Err(SqlError::Unsupported(
                    "DISTINCT ON with ORDER BY is not supported on streams (the first row seen is kept)".into(),
                ));
            }
            let keys: Vec<Expr> = d.on_expr.iter().filter(|e| !marker(e)).cloned().collect();
            let within = keys.len() != d.on_expr.len();
            (
                d.input.clone(),
                keys,
                d.select_expr.clone(),
                d.schema.clone(),
                within,
            )
        }
    };
    let wm = side_watermark(input.schema(), watermarks);
    let time_in_keys = wm.as_ref().is_some_and(|(_, _, c)| {
        keys.iter()
            .any(|k| column_name(k).is_some_and(|n| n.eq_ignore_ascii_case(&c.name)))
    });
    let mut exprs: Vec<Expr> = Vec::new();
    exprs.extend(
        keys.iter()
            .enumerate()
            .map(|(i, k)| k.clone().alias(format!("__k{i}"))),
    );
    exprs.extend(select.iter().enumerate().map(|(i, e)| {
        let e = match e {
            Expr::Alias(a) => a.expr.as_ref().clone(),
            other => other.clone(),
        };
        e.alias(format!("__s{i}"))
    }));
    if let Some((_, _, c)) = &wm {
        exprs.push(Expr::Column(c.clone()).alias("__wm"));
    }
    let state = ctx.state();
    let lower = LogicalPlanBuilder::from(input.as_ref().clone())
        .project(exprs)?
        .build()?;
    let lower = state.optimize(&lower)?;
    let key_types = lower.schema().fields()[..keys.len()]
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let (output, out_scan) = slot_for(&schema, "__dedup_out")?;
    let upper = replace_first(
        plan.clone(),
        &out_scan,
        |p| matches!(p, LogicalPlan::Distinct(d) if d == &distinct),
    )?;
    let upper = state.optimize(&upper)?;
    let spec = DedupSpec {
        n_keys: keys.len(),
        n_select: select.len(),
        delay_ms: wm.as_ref().map(|w| w.1),
        time_in_keys,
        within_watermark: within,
    };
    Ok(Some(StreamingPlan {
        upper,
        aggregate: None,
        operator: Some(Box::new(StreamDedup::new(lower, output, spec, key_types)?)),
        mode,
        watermark_delay_ms: wm.map(|w| w.1),
    }))
}

/// `plan` with the first node (top down) that `is_it` picks replaced by `replacement`.
fn replace_first(
    plan: LogicalPlan,
    replacement: &LogicalPlan,
    is_it: impl Fn(&LogicalPlan) -> bool,
) -> Result<LogicalPlan> {
    let mut replaced = false;
    Ok(plan
        .transform_down(|p| {
            if !replaced && is_it(&p) {
                replaced = true;
                return Ok(Transformed::new(
                    replacement.clone(),
                    true,
                    TreeNodeRecursion::Jump,
                ));
            }
            Ok(Transformed::no(p))
        })?
        .data)
}

/// Spark's error for a sort that is not on an aggregation in complete mode.
fn sorting_unsupported() -> SqlError {
    SqlError::Unsupported(
        "Sorting is not supported on streaming DataFrames/Datasets, unless it is on aggregated DataFrame/Dataset in Complete output mode".into(),
    )
}

fn has_sort(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|p| {
        if matches!(p, LogicalPlan::Sort(_)) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Operations Spark refuses on streams, or that Runnel does not do yet.
fn check_unsupported(plan: &LogicalPlan) -> Result<()> {
    let mut err = None;
    plan.apply(|p| {
        match p {
            LogicalPlan::Join(j) if is_streaming(&j.left) && is_streaming(&j.right) => {}
            LogicalPlan::Join(j) if is_streaming(&j.right) && matches!(j.join_type, datafusion::logical_expr::JoinType::Left | datafusion::logical_expr::JoinType::Full) => {
                err = Some(format!("{} outer join with a streaming DataFrame/Dataset on the right and a static DataFrame/Dataset on the left is not supported", j.join_type));
            }
            LogicalPlan::Join(j) if is_streaming(&j.left) && matches!(j.join_type, datafusion::logical_expr::JoinType::Right | datafusion::logical_expr::JoinType::Full) => {
                err = Some(format!("{} outer join with a streaming DataFrame/Dataset on the left and a static DataFrame/Dataset on the right is not supported", j.join_type));
            }
            LogicalPlan::Window(w) if is_streaming(&w.input) => {
                err = Some("Non-time-based windows are not supported on streaming DataFrames/Datasets".to_string());
            }
            LogicalPlan::Limit(l) if is_streaming(&l.input) && !contains_aggregate(&l.input) => {
                err = Some("Limits are not supported on streaming DataFrames/Datasets without an aggregation in Complete output mode".to_string());
            }
            _ => {}
        }
        Ok(if err.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })?;
    match err {
        Some(e) => Err(SqlError::Unsupported(e)),
        None => Ok(()),
    }
}

fn contains_aggregate(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|p| {
        if matches!(p, LogicalPlan::Aggregate(_)) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
