//! `SlotTable`: a DataFusion table whose rows are whatever the driver put in its slot for
//! the current micro-batch. Streaming sources and the aggregation's output are slot
//! tables; a plan is re-instantiated (physical planning only) for every batch.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Thread-safe: the slot is behind a mutex.
#[derive(Debug)]
pub struct SlotTable {
    schema: SchemaRef,
    /// True for a streaming source (as opposed to operator output).
    pub streaming: bool,
    /// Index of the streaming source (declaration order), if it is one.
    pub source_index: Option<usize>,
    slot: Mutex<Vec<RecordBatch>>,
    /// Scan partitions the slot's batches are dealt across (round robin). More than one
    /// lets DataFusion use several cores, but only where row order does not matter.
    partitions: AtomicUsize,
}

impl SlotTable {
    pub fn new(schema: SchemaRef, streaming: bool, source_index: Option<usize>) -> Self {
        SlotTable {
            schema,
            streaming,
            source_index,
            slot: Mutex::new(Vec::new()),
            partitions: AtomicUsize::new(1),
        }
    }

    /// Deals the rows over `n` scan partitions from now on (1: one partition, in order).
    pub fn set_partitions(&self, n: usize) {
        self.partitions.store(n.max(1), Ordering::Relaxed);
    }

    pub fn schema_ref(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.slot.lock() = batches;
    }
}

#[async_trait]
impl TableProvider for SlotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.slot.lock().clone();
        let n = self
            .partitions
            .load(Ordering::Relaxed)
            .min(batches.len())
            .max(1);
        Ok(MemorySourceConfig::try_new_exec(
            &deal(batches, n),
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

/// Deals batches over `n` partitions by rows, each to the partition with the fewest rows
/// so far (in order within a partition), so that every core gets its share of the work:
/// a source's batches are not all of one size (the Kafka readers' last batches are
/// short), and dealing them by count left one core with twice the rows of the other.
fn deal(batches: Vec<RecordBatch>, n: usize) -> Vec<Vec<RecordBatch>> {
    let mut parts = vec![Vec::new(); n.max(1)];
    let mut rows = vec![0usize; parts.len()];
    for b in batches {
        let i = (0..rows.len()).min_by_key(|&i| rows[i]).unwrap_or(0);
        rows[i] += b.num_rows();
        parts[i].push(b);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn batches_are_dealt_by_rows_not_by_count() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let batch = |n: i32| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int32Array::from_iter_values(0..n))],
            )
            .unwrap()
        };
        // Two readers' shares of 25,000 rows each, in batches of 8,192 and a short one.
        let sizes = [8192, 8192, 8192, 424, 8192, 8192, 8192, 424];
        let parts = deal(sizes.iter().map(|&n| batch(n)).collect(), 2);
        let rows: Vec<usize> = parts
            .iter()
            .map(|p| p.iter().map(|b| b.num_rows()).sum())
            .collect();
        assert_eq!(rows.iter().sum::<usize>(), 50_000);
        assert!(rows[0].abs_diff(rows[1]) <= 8192, "{rows:?}");
        assert_eq!(deal(vec![batch(3)], 1).len(), 1);
    }
}
