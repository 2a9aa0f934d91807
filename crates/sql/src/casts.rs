//! Spark's casts between timestamps and numbers: a number is seconds since the epoch.
//!
//! In Spark `CAST(ts AS BIGINT)` is the timestamp's whole seconds (rounded down),
//! `CAST(ts AS DOUBLE)` its seconds with the fraction, and `CAST(1700000000 AS
//! TIMESTAMP)` the instant 1,700,000,000 seconds after the epoch. DataFusion's casts take
//! and give the timestamp's raw count of its unit (milliseconds for the Kafka source's
//! `timestamp`, nanoseconds for SQL's `TIMESTAMP`), so a Spark query such as `SELECT
//! CAST(timestamp AS LONG)` answered in milliseconds, and `CAST(epoch_seconds AS
//! TIMESTAMP)` gave an instant in January 1970, with no error.
//!
//! [`SparkCasts`] is an analyzer rule: after type coercion it replaces each such cast
//! (`CAST` and `TRY_CAST`, written or inserted by coercion) with the same cast around a
//! conversion to or from seconds, keeping the expression's output name. The conversions
//! are functions of their own, not casts, so analyzing a plan again (DataFusion analyzes
//! before every optimization) changes nothing.

use crate::functions::to_millis;
use datafusion::arrow::array::TimestampMicrosecondArray;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TryCast, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use std::sync::Arc;

/// The analyzer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct SparkCasts;

impl AnalyzerRule for SparkCasts {
    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let schema = merge_schema(&plan.inputs());
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|e| {
                let name = names.save(&e);
                let rewritten = e.transform_up(|e| spark_cast(e, &schema))?;
                Ok(rewritten.update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "spark_casts"
    }
}

/// `e` with a cast between a timestamp and a number made Spark's.
fn spark_cast(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let (inner, to) = match &e {
        Expr::Cast(c) => (c.expr.as_ref(), c.field.clone()),
        Expr::TryCast(c) => (c.expr.as_ref(), c.field.clone()),
        _ => return Ok(Transformed::no(e)),
    };
    let Ok(from) = inner.get_type(schema) else {
        return Ok(Transformed::no(e));
    };
    let conversion = match (&from, to.data_type()) {
        (DataType::Timestamp(..), t) if t.is_integer() => Conversion::WholeSeconds,
        (DataType::Timestamp(..), t) if t.is_floating() || t.is_decimal() => Conversion::Seconds,
        (f, DataType::Timestamp(..)) if f.is_numeric() => Conversion::FromSeconds,
        _ => return Ok(Transformed::no(e)),
    };
    let converted = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(SecondsUdf::new(conversion))),
        vec![inner.clone()],
    ));
    Ok(Transformed::yes(match e {
        Expr::TryCast(_) => Expr::TryCast(TryCast::new_from_field(Box::new(converted), to)),
        _ => Expr::Cast(Cast::new_from_field(Box::new(converted), to)),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Conversion {
    /// Timestamp -> Int64: whole seconds, rounded down (Spark's `floorDiv`).
    WholeSeconds,
    /// Timestamp -> Float64: seconds with the fraction (to the microsecond, as Spark).
    Seconds,
    /// Number -> Timestamp(µs): the number is seconds (a fraction is kept to the
    /// microsecond; NaN and infinities give null).
    FromSeconds,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SecondsUdf {
    conversion: Conversion,
    signature: Signature,
}

impl SecondsUdf {
    fn new(conversion: Conversion) -> Self {
        SecondsUdf {
            conversion,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SecondsUdf {
    fn name(&self) -> &str {
        match self.conversion {
            Conversion::WholeSeconds => "spark_timestamp_to_seconds",
            Conversion::Seconds => "spark_timestamp_to_fractional_seconds",
            Conversion::FromSeconds => "spark_seconds_to_timestamp",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.conversion {
            Conversion::WholeSeconds => DataType::Int64,
            Conversion::Seconds => DataType::Float64,
            Conversion::FromSeconds => DataType::Timestamp(TimeUnit::Microsecond, None),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = args.args[0].clone().into_array(args.number_rows)?;
        let out: ArrayRef = match self.conversion {
            Conversion::WholeSeconds => {
                let ms = to_millis(&a)?;
                let s: Int64Array = ms.iter().map(|v| v.map(|ms| ms.div_euclid(1000))).collect();
                Arc::new(s)
            }
            Conversion::Seconds => {
                let micros = micros_of(&a)?;
                let s: Float64Array = micros.iter().map(|v| v.map(|us| us as f64 / 1e6)).collect();
                Arc::new(s)
            }
            Conversion::FromSeconds => {
                let t: TimestampMicrosecondArray = if a.data_type().is_integer() {
                    let i = cast(&a, &DataType::Int64)?;
                    i.as_primitive::<Int64Type>()
                        .iter()
                        .map(|v| v.and_then(|s| s.checked_mul(1_000_000)))
                        .collect()
                } else {
                    let f = cast(&a, &DataType::Float64)?;
                    f.as_primitive::<Float64Type>()
                        .iter()
                        .map(|v| {
                            v.map(|s| s * 1e6)
                                .filter(|us| us.is_finite() && us.abs() < i64::MAX as f64)
                                .map(|us| us as i64)
                        })
                        .collect()
                };
                Arc::new(t)
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// A timestamp column as microseconds since the epoch (its time zone does not matter:
/// the instant is the same).
fn micros_of(a: &ArrayRef) -> Result<Int64Array> {
    let tz = match a.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let us = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, tz))?;
    let us = cast(&us, &DataType::Int64)?;
    Ok(us.as_primitive::<Int64Type>().clone())
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    async fn one(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.add_analyzer_rule(std::sync::Arc::new(super::SparkCasts));
        ctx
    }

    #[tokio::test]
    async fn timestamps_cast_to_and_from_seconds_as_in_spark() {
        let ctx = ctx();
        // 2023-11-14T22:13:20.750Z is 1,700,000,000.75 s after the epoch.
        let ts = "to_timestamp_millis(1700000000750)";
        let out = one(
            &ctx,
            &format!(
                "SELECT CAST({ts} AS BIGINT) AS l, CAST({ts} AS INT) AS i, \
                 CAST({ts} AS DOUBLE) AS d, TRY_CAST({ts} AS BIGINT) AS t, \
                 CAST(to_timestamp_millis(-1) AS BIGINT) AS before_epoch, \
                 CAST(1700000000 AS TIMESTAMP) AS from_int, \
                 CAST(1700000000.5 AS TIMESTAMP) AS from_double, \
                 CAST(CAST(1700000000 AS TIMESTAMP) AS BIGINT) AS round_trip"
            ),
        )
        .await;
        for want in [
            "| 1700000000 | 1700000000 | 1700000000.75 | 1700000000 | -1           | 2023-11-14T22:13:20 | 2023-11-14T22:13:20.500 | 1700000000 |",
        ] {
            assert!(out.contains(want), "{out}");
        }
        // The output names are the written expressions', not the rewrite's.
        let names = one(
            &ctx,
            &format!("SELECT CAST({ts} AS BIGINT) FROM (VALUES (1))"),
        )
        .await;
        assert!(
            names.contains("to_timestamp_millis(Int64(1700000000750))"),
            "{names}"
        );
        assert!(!names.contains("spark_"), "{names}");
    }

    #[tokio::test]
    async fn other_casts_are_left_alone() {
        let ctx = ctx();
        let out = one(
            &ctx,
            "SELECT CAST('42' AS BIGINT) AS s, CAST(2.5 AS BIGINT) AS f, \
             CAST(CAST('2023-11-14 22:13:20' AS TIMESTAMP) AS DATE) AS d",
        )
        .await;
        assert!(out.contains("| 42 | 2 | 2023-11-14 |"), "{out}");
    }
}
