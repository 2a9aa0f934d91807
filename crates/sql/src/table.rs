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
        let mut parts = vec![Vec::new(); n];
        for (i, b) in batches.into_iter().enumerate() {
            parts[i % n].push(b);
        }
        Ok(MemorySourceConfig::try_new_exec(
            &parts,
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
