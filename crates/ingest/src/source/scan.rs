//! The ingest's leaf plan, and the table that plans it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use segflow_core::datafusion::arrow::datatypes::SchemaRef;
use segflow_core::datafusion::catalog::{Session, TableProvider};
use segflow_core::datafusion::common::tree_node::TreeNodeRecursion;
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::execution::TaskContext;
use segflow_core::datafusion::logical_expr::{Expr, TableType};
use segflow_core::datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use segflow_core::datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use segflow_core::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use segflow_core::datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};

use super::{ExtraKeys, FileSource, Format, Reading};
use crate::row_checks::RowChecks;

/// The files of one ingest, as a table: scanning it plans an [`IngestScan`].
#[derive(Debug)]
pub struct IngestTable {
    files: Arc<Vec<FileSource>>,
    format: Format,
    checks: Arc<RowChecks>,
    extra_keys: ExtraKeys,
}

impl IngestTable {
    /// The files in `format`, checked by `checks`; an NDJSON reader adds the keys its records
    /// have beyond the contract's to `extra_keys`, for the stage to report.
    pub(crate) fn new(
        files: Vec<FileSource>,
        format: Format,
        checks: Arc<RowChecks>,
        extra_keys: ExtraKeys,
    ) -> Self {
        IngestTable {
            files: Arc::new(files),
            format,
            checks,
            extra_keys,
        }
    }
}

#[async_trait]
impl TableProvider for IngestTable {
    fn schema(&self) -> SchemaRef {
        self.checks.schema().clone()
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
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(IngestScan::try_new(
            self.files.clone(),
            self.format.clone(),
            self.checks.clone(),
            self.extra_keys.clone(),
            projection.cloned(),
        )?))
    }
}

/// Reads and checks a stage's files: one partition per file, or per piece of a file that its
/// reader cuts ([`FormatReader::partitions`](super::FormatReader::partitions)). A leaf of
/// plain data; each file's store comes from the runtime the task runs in.
#[derive(Debug)]
pub struct IngestScan {
    files: Arc<Vec<FileSource>>,
    format: Format,
    checks: Arc<RowChecks>,
    extra_keys: ExtraKeys,
    /// Per partition: the file (an index into `files`) and its part.
    parts: Vec<(usize, usize)>,
    /// The columns of the checked rows it yields; `None`: all.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl IngestScan {
    fn try_new(
        files: Arc<Vec<FileSource>>,
        format: Format,
        checks: Arc<RowChecks>,
        extra_keys: ExtraKeys,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let reader = format.reader();
        let parts: Vec<(usize, usize)> = files
            .iter()
            .enumerate()
            .flat_map(|(f, file)| (0..reader.partitions(file)).map(move |p| (f, p)))
            .collect();
        let schema = match &projection {
            Some(p) => Arc::new(checks.schema().project(p)?),
            None => checks.schema().clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(parts.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(IngestScan {
            files,
            format,
            checks,
            extra_keys,
            parts,
            projection,
            schema,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for IngestScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "IngestScan: format={}, files={}, partitions={}",
            self.format.name(),
            self.files.len(),
            self.parts.len()
        )
    }
}

impl ExecutionPlan for IngestScan {
    fn name(&self) -> &'static str {
        "IngestScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "IngestScan is a leaf: it has no children to replace".into(),
            ))
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let &(f, part) = self.parts.get(partition).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "IngestScan has {} partitions, not {}",
                self.parts.len(),
                partition + 1
            ))
        })?;
        let file = &self.files[f];
        let reading = Reading {
            checks: self.checks.clone(),
            store: context
                .runtime_env()
                .object_store_registry
                .get_store(&file.url)?,
            extra_keys: self.extra_keys.clone(),
        };
        let stream = self.format.reader().read(file, part, &reading);
        Ok(match &self.projection {
            None => stream,
            Some(projection) => {
                let projection = projection.clone();
                Box::pin(RecordBatchStreamAdapter::new(
                    self.schema.clone(),
                    stream.map(move |b| b.and_then(|b| Ok(b.project(&projection)?))),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use crate::source::{Dialect, Piece, meta_fields};
    use crate::validate::Parse;
    use segflow_core::datafusion::arrow::array::{AsArray, Int64Array};
    use segflow_core::datafusion::arrow::datatypes::{Int32Type, Int64Type};
    use segflow_core::datafusion::physical_plan::{common, displayable};
    use segflow_core::datafusion::prelude::SessionContext;

    /// A CSV file of `ids` cut into two pieces at the record `cut` starts.
    fn table(dir: &std::path::Path, ids: &[&str], cut: usize) -> IngestTable {
        std::fs::write(
            dir.join("t.yaml"),
            "table: t\ncolumns:\n  - { name: id, type: string, nullable: false }\n  \
             - { name: n, type: int }\n",
        )
        .unwrap();
        let contract = Contract::load(&dir.join("t.yaml")).unwrap();
        let parses = vec![Parse { format: None }; 2];
        let checks = RowChecks::new(&contract, &parses, chrono::Utc::now(), meta_fields()).unwrap();
        let mut text = String::from("id,n\n");
        let mut start = 0;
        for (i, id) in ids.iter().enumerate() {
            if i == cut {
                start = text.len() as u64;
            }
            text.push_str(&format!("{id},{i}\n"));
        }
        let path = dir.join("t.csv");
        std::fs::write(&path, &text).unwrap();
        let size = text.len() as u64;
        let file = FileSource {
            url: url::Url::from_file_path(&path).unwrap(),
            size,
            compression: segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType::UNCOMPRESSED,
            names: vec!["id".into(), "n".into()],
            positions: vec![Some(0), Some(1)],
            header: vec!["id".into(), "n".into()],
            pieces: vec![
                Piece {
                    start: 0,
                    end: start,
                    first_line: 1,
                },
                Piece {
                    start,
                    end: size,
                    first_line: 2 + cut as u64,
                },
            ],
        };
        let dialect = Dialect {
            delimiter: b',',
            quote: b'"',
            header_line: 1,
        };
        IngestTable::new(
            vec![file],
            Format::Csv(dialect),
            Arc::new(checks),
            ExtraKeys::new(false),
        )
    }

    #[tokio::test]
    async fn a_cut_file_reads_as_one_partition_per_piece_with_true_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let table = table(dir.path(), &["a", "b", "c", "d", "e"], 2);
        // A projection of two columns: the line number and the typed `n`.
        let n = table.schema().index_of("n").unwrap();
        let line = table.schema().index_of(super::super::LINE_NUMBER).unwrap();
        let plan = table
            .scan(&ctx.state(), Some(&vec![line, n]), &[], None)
            .await
            .unwrap();
        assert_eq!(
            displayable(plan.as_ref()).one_line().to_string().trim(),
            "IngestScan: format=csv, files=1, partitions=2"
        );
        assert_eq!(plan.schema().fields().len(), 2);
        let mut batches = Vec::new();
        for part in 0..2 {
            let stream = plan.execute(part, ctx.task_ctx()).unwrap();
            let part = common::collect(stream).await.unwrap();
            // The cut is at the third record: the first piece has two rows.
            if batches.is_empty() {
                assert_eq!(part.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
            }
            batches.extend(part);
        }
        let (mut lines, mut values) = (Vec::new(), Vec::new());
        for b in &batches {
            let l: &Int64Array = b.column(0).as_primitive::<Int64Type>();
            lines.extend(l.values().iter().copied());
            let n = b.column(1).as_primitive::<Int32Type>();
            values.extend(n.values().iter().copied());
        }
        // The header is line 1; the second piece's lines are counted from its start.
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert_eq!(values, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_partition_past_the_last_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let plan = table(dir.path(), &["a", "b"], 1)
            .scan(&ctx.state(), None, &[], None)
            .await
            .unwrap();
        let e = plan.execute(2, ctx.task_ctx()).err().unwrap();
        assert!(e.to_string().contains("has 2 partitions, not 3"), "{e}");
    }
}
