//! The physical write: each partition's rows into its files, then one row per file.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, plan_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::sink::PartWriter;
use super::{LocalHooks, WriteSpec, result_batch, result_schema};

/// Writes each input partition's rows as [`WriteSpec`] says; each output partition is one row
/// per file that partition wrote (see [`super`]).
#[derive(Debug)]
pub struct WriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: WriteSpec,
    /// Per target, the input columns it keeps, as indices.
    columns: Vec<Vec<usize>>,
    /// The index of the split column.
    split: Option<usize>,
    hooks: Option<Arc<LocalHooks>>,
    properties: Arc<PlanProperties>,
}

impl WriteExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: WriteSpec) -> Result<Self> {
        let schema = input.schema();
        let index = |c: &String| {
            schema.index_of(c).map_err(|_| {
                DataFusionError::Plan(format!("a write names column `{c}`, which its input lacks"))
            })
        };
        let columns = spec
            .targets
            .iter()
            .map(|t| t.columns.iter().map(index).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let split = spec.split_by.as_ref().map(index).transpose()?;
        if split.is_some() != (spec.targets.len() == 2) || spec.targets.is_empty() {
            return plan_err!("a write has one target, or two and a column to split by");
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(result_schema()),
            Partitioning::UnknownPartitioning(
                input.properties().output_partitioning().partition_count(),
            ),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(WriteExec {
            input,
            spec,
            columns,
            split,
            hooks: None,
            properties: Arc::new(properties),
        })
    }

    pub(crate) fn with_hooks(mut self, hooks: Arc<LocalHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// Whether this node counts and shows rows to hooks of this process.
    pub(crate) fn has_hooks(&self) -> bool {
        self.hooks.is_some()
    }
}

impl DisplayAs for WriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let tables: Vec<&str> = self.spec.targets.iter().map(|t| t.table.as_str()).collect();
        write!(f, "WriteExec: {}", tables.join(", "))?;
        if let Some(by) = &self.spec.split_by {
            write!(f, " (split by {by})")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for WriteExec {
    fn name(&self) -> &'static str {
        "WriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    // Each input partition becomes its own files, as the input is partitioned: more
    // partitions would only mean more, smaller files.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("WriteExec has one input");
        }
        let exec = WriteExec::try_new(children.remove(0), self.spec.clone())?;
        Ok(Arc::new(match &self.hooks {
            Some(h) => exec.with_hooks(h.clone()),
            None => exec,
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut rows = self.input.execute(partition, context.clone())?;
        let input_schema = self.input.schema();
        // Unique per execution: a retried task writes new files beside the first attempt's.
        let attempt: u64 = rand::random();
        let mut parts = self
            .spec
            .targets
            .iter()
            .zip(&self.columns)
            .map(|(t, columns)| {
                let schema: SchemaRef = Arc::new(input_schema.project(columns)?);
                PartWriter::new(&t.sink, schema, partition, attempt, &context)
            })
            .collect::<Result<Vec<_>>>()?;
        let columns = self.columns.clone();
        let split = self.split;
        let hooks = self.hooks.clone();
        let write = async move {
            while let Some(batch) = rows.next().await {
                let batch = batch?;
                let pieces: Vec<RecordBatch> = match split {
                    None => vec![batch],
                    Some(by) => split_rows(&batch, by)?.into(),
                };
                for (k, rows) in pieces.iter().enumerate() {
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    if let Some(hooks) = &hooks {
                        if k == 0
                            && let Some(observe) = &hooks.observe
                        {
                            observe(rows).map_err(|e| DataFusionError::External(Box::new(e)))?;
                        }
                        if let Some(count) = hooks.rows.get(k) {
                            count.fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                        }
                    }
                    parts[k].write(&rows.project(&columns[k])?).await?;
                }
            }
            let mut batches = Vec::with_capacity(parts.len());
            for (k, part) in parts.into_iter().enumerate() {
                batches.push(result_batch(k, &part.close().await?)?);
            }
            Ok(arrow::compute::concat_batches(&result_schema(), &batches)?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            result_schema(),
            futures::stream::once(write),
        )))
    }
}

/// A batch's rows where column `by` is true, and the others (false or null).
fn split_rows(batch: &RecordBatch, by: usize) -> Result<[RecordBatch; 2]> {
    let Some(mask) = batch.column(by).as_boolean_opt() else {
        return internal_err!("column {by} to split by is not a boolean");
    };
    // Null counts as false (`prep_null_mask_filter` expects some null).
    let mask = match mask.null_count() {
        0 => mask.clone(),
        _ => prep_null_mask_filter(mask),
    };
    let not = arrow::compute::not(&mask)?;
    Ok([
        filter_record_batch(batch, &mask)?,
        filter_record_batch(batch, &not)?,
    ])
}
