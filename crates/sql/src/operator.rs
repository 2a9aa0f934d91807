//! The stateful operators (the aggregation, the stream-stream join, the deduplication)
//! behind one interface, so the driver runs, checkpoints and reports them the same way. Each reads the sources' slot tables and writes its own output table,
//! which the rest of the query (the upper plan) scans. Operators run their plans with
//! [`execute`] here and never call back into the driver (`engine`).

use crate::error::{Result, SqlError};
use crate::progress::StateOperatorProgress;
use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{collect, SendableRecordBatchStream};
use datafusion::prelude::SessionContext;

/// Plans (physically) and runs a logical plan that is already optimized: what the
/// operators and the driver both use.
pub async fn execute(ctx: &SessionContext, plan: &LogicalPlan) -> Result<Vec<RecordBatch>> {
    let state = ctx.state();
    let physical = state
        .query_planner()
        .create_physical_plan(plan, &state)
        .await?;
    Ok(collect(physical, ctx.task_ctx()).await?)
}

/// Like [`execute`], but hands the rows over as the plan's partitions make them, so the
/// caller folds one batch while the cores compute the next (rather than waiting for all
/// of them and then folding on one core while the others idle). The order of batches
/// across partitions is whichever finishes first, as with [`execute`].
pub async fn execute_stream(
    ctx: &SessionContext,
    plan: &LogicalPlan,
) -> Result<SendableRecordBatchStream> {
    let state = ctx.state();
    let physical = state
        .query_planner()
        .create_physical_plan(plan, &state)
        .await?;
    Ok(datafusion::physical_plan::execute_stream(
        physical,
        ctx.task_ctx(),
    )?)
}

/// A stateful operator. Not thread-safe in use: owned and driven by the query's driver.
#[async_trait]
pub trait StateOperator: Send + Sync {
    /// Runs batch `batch_id` over what the sources' slot tables hold, with the batch's
    /// watermark; fills the operator's output table.
    async fn run_batch(
        &mut self,
        ctx: &SessionContext,
        batch_id: u64,
        watermark_ms: i64,
    ) -> Result<()>;
    /// Empties the output table once the batch is written.
    fn clear_output(&self);
    /// The watermark this operator's inputs allow (None until it can tell).
    fn watermark_ms(&self) -> Option<i64>;
    /// Whether state would leave at watermark `watermark_ms` (a no-data batch is useful).
    fn has_expired(&self, watermark_ms: i64) -> bool;
    /// The largest event time seen.
    fn max_event_time_ms(&self) -> Option<i64>;
    /// Spark's `stateOperators` entry for the last batch.
    fn progress(&self) -> StateOperatorProgress;
    /// The whole state, for the checkpoint.
    fn snapshot(&self) -> Result<Vec<u8>>;
    /// Replaces the state with a snapshot; `what` names the file for errors.
    fn restore(&mut self, bytes: &[u8], what: &str) -> Result<()>;
    /// The state file for the batch just run: by default the whole state; an operator
    /// with Spark's changelog checkpointing writes the changes since the last file, and
    /// a full snapshot every `set_deltas_per_snapshot` deltas.
    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.snapshot()
    }
    /// Restores from a full snapshot and the deltas written after it, in order (what
    /// `Checkpoint::read_state_chain` gives).
    fn restore_chain(&mut self, files: &[(Vec<u8>, String)]) -> Result<()> {
        let Some(((first, what), deltas)) = files.split_first() else {
            return Ok(());
        };
        if let Some((_, delta)) = deltas.first() {
            return Err(SqlError::Checkpoint {
                path: delta.clone(),
                message: "a state delta, but this operator writes full snapshots".into(),
            });
        }
        self.restore(first, what)
    }
    /// Deltas between full snapshots (0: a full snapshot every batch).
    fn set_deltas_per_snapshot(&mut self, _n: u32) {}
    /// Whether the input must reach the operator in offset order (one partition): a
    /// join and a deduplication keep the first row seen; an aggregation does not care,
    /// so its input may be spread over the session's partitions (cores).
    fn input_order_matters(&self) -> bool {
        true
    }
}
