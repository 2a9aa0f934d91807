//! The streaming aggregation operator (Spark's `StateStoreRestoreExec` and
//! `StateStoreSaveExec` in one): runs the plan below the aggregation, folds its rows into
//! the state (`aggregate_state::AggregateState`: keys, windows, watermark eviction, state
//! files), and writes the rows the output mode emits to the slot table the plan above
//! reads. Not thread-safe: owned by the query's driver.

use crate::aggregate_state::{AggregateSpec, AggregateState};
use crate::error::Result;
use crate::operator::{execute_stream, StateOperator};
use crate::progress::StateOperatorProgress;
use crate::table::SlotTable;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use std::sync::Arc;

/// The operator. See the module docs.
pub struct StreamAggregate {
    /// The plan below the aggregation: keys, then aggregate arguments, then the
    /// watermark column, as `AggregateSpec` describes them.
    lower: LogicalPlan,
    /// Where the emitted rows go for the plan above.
    output: Arc<SlotTable>,
    state: AggregateState,
    /// The delay of the watermark that reaches the aggregation, if one does.
    delay_ms: Option<i64>,
}

impl StreamAggregate {
    pub fn new(
        lower: LogicalPlan,
        spec: AggregateSpec,
        output: Arc<SlotTable>,
        delay_ms: Option<i64>,
    ) -> Result<StreamAggregate> {
        Ok(StreamAggregate {
            lower,
            output,
            state: AggregateState::new(spec)?,
            delay_ms,
        })
    }
}

#[async_trait::async_trait]
impl StateOperator for StreamAggregate {
    async fn run_batch(
        &mut self,
        ctx: &SessionContext,
        batch_id: u64,
        watermark_ms: i64,
    ) -> Result<()> {
        let mut input = execute_stream(ctx, &self.lower).await?;
        self.state.begin_batch();
        while let Some(b) = input.next().await {
            self.state.update(&b?, Some(watermark_ms), batch_id)?;
        }
        let out = self.state.finish_batch(Some(watermark_ms), batch_id)?;
        self.state.bound_changes();
        // The state builds the aggregate's schema; the slot's names are the plan's.
        let out = RecordBatch::try_new(self.output.schema_ref(), out.columns().to_vec())?;
        self.output.set(vec![out]);
        Ok(())
    }

    fn clear_output(&self) {
        self.output.set(Vec::new());
    }

    fn watermark_ms(&self) -> Option<i64> {
        Some(self.state.max_event_time_ms()? - self.delay_ms?)
    }

    fn has_expired(&self, watermark_ms: i64) -> bool {
        self.state.has_expired(watermark_ms)
    }

    fn max_event_time_ms(&self) -> Option<i64> {
        self.state.max_event_time_ms()
    }

    fn progress(&self) -> StateOperatorProgress {
        let m = self.state.metrics();
        StateOperatorProgress {
            operator_name: "stateStoreSave".into(),
            num_rows_total: m.num_rows_total,
            num_rows_updated: m.num_rows_updated,
            num_rows_removed: m.num_rows_removed,
            num_rows_dropped_by_watermark: m.num_rows_dropped_by_watermark,
            memory_used_bytes: m.memory_used_bytes,
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(self.state.snapshot())
    }

    fn restore(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.state.restore(bytes, what)
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        Ok(self.state.checkpoint())
    }

    fn restore_chain(&mut self, files: &[(Vec<u8>, String)]) -> Result<()> {
        crate::checkpoint::Changelog::restore_chain(&mut self.state, files)
    }

    fn set_deltas_per_snapshot(&mut self, n: u32) {
        self.state.set_deltas_per_snapshot(n);
    }

    /// An aggregation folds its input in any order.
    fn input_order_matters(&self) -> bool {
        false
    }
}
