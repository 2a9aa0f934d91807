//! The stateful operators other than the aggregation (the stream-stream join, the
//! deduplication) behind one interface, so the driver runs, checkpoints and reports them
//! the same way. Each reads the sources' slot tables and writes its own output table,
//! which the rest of the query (the upper plan) scans.

use crate::error::Result;
use crate::progress::StateOperatorProgress;
use async_trait::async_trait;
use datafusion::prelude::SessionContext;

/// A stateful operator. Not thread-safe in use: owned and driven by the query's driver.
#[async_trait]
pub trait StateOperator: Send + Sync {
    /// Runs one batch over what the sources' slot tables hold, with the batch's
    /// watermark; fills the operator's output table.
    async fn run_batch(&mut self, ctx: &SessionContext, watermark_ms: i64) -> Result<()>;
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
}
