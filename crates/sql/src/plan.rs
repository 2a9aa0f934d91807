//! Turns a SELECT into a streaming plan: finds the one stateful operator (an aggregation
//! over streaming input), splits the logical plan around it, and applies Spark's rules
//! about output modes, sorting and unsupported operations.
//!
//! ```text
//!   upper plan (DataFusion, per batch)      e.g. Projection / Filter (HAVING) / Sort
//!        │ reads the slot table "__state"
//!   StatefulAggregate (ours, keeps state)
//!        │ reads the columns of the lower plan
//!   lower plan (DataFusion, per batch)      Projection(keys, args) over the stream
//! ```
//! Without an aggregation the whole query is a stateless per-batch plan.

use crate::aggregate::{AggKind, AggregateSpec, GroupColumn, OutputMode};
use crate::error::{Result, SqlError};
use crate::functions::WindowSpec;
use crate::script::WatermarkDecl;
use crate::table::SlotTable;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{cast, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// The planned streaming query.
pub struct StreamingPlan {
    /// Whole plan (stateless) or the part above the aggregation.
    pub upper: LogicalPlan,
    pub aggregate: Option<AggregatePlan>,
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
            return Err(SqlError::Unsupported(
                "Sorting is not supported on streaming DataFrames/Datasets, unless it is on aggregated DataFrame/Dataset in Complete output mode".into(),
            ));
        }
        let upper = state.optimize(&plan)?;
        return Ok(StreamingPlan {
            upper,
            aggregate: None,
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
            "Append output mode not supported when there are streaming aggregations on streaming DataFrames/DataSets without watermark".into(),
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
    let slot_schema = Arc::new(Schema::new(
        output_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("__c{i}"), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let state_table = Arc::new(SlotTable::new(slot_schema, false, None));
    let scan = LogicalPlanBuilder::scan("__state", provider_as_source(state_table.clone()), None)?
        .build()?;
    let renames: Vec<Expr> = agg
        .schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            Expr::Column(Column::new(Some("__state"), format!("__c{i}")))
                .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    let replacement = LogicalPlanBuilder::from(scan).project(renames)?.build()?;
    let mut replaced = false;
    let upper = plan
        .transform_down(|p| {
            if let LogicalPlan::Aggregate(a) = &p {
                if !replaced && a.schema == agg.schema && is_streaming(&a.input) {
                    replaced = true;
                    return Ok(Transformed::new(
                        replacement.clone(),
                        true,
                        TreeNodeRecursion::Jump,
                    ));
                }
            }
            Ok(Transformed::no(p))
        })?
        .data;
    if has_sort(&upper) && mode != OutputMode::Complete {
        return Err(SqlError::Unsupported(
            "Sorting is not supported on streaming DataFrames/Datasets, unless it is on aggregated DataFrame/Dataset in Complete output mode".into(),
        ));
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
    Ok(StreamingPlan {
        upper,
        aggregate: Some(AggregatePlan {
            lower,
            spec,
            state_table,
        }),
        mode,
        watermark_delay_ms: wm_delay,
    })
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
            LogicalPlan::Join(j) if is_streaming(&j.left) && is_streaming(&j.right) => {
                err = Some("stream-stream joins are not supported yet (stream-static joins are)".to_string());
            }
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
