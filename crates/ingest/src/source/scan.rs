//! The ingest's leaf plan, and the table that plans it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use segflow_core::datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use segflow_core::datafusion::arrow::datatypes::SchemaRef;
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use segflow_core::datafusion::catalog::{Session, TableProvider};
use segflow_core::datafusion::common::tree_node::TreeNodeRecursion;
use segflow_core::datafusion::datasource::memory::MemorySourceConfig;
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
use crate::wire::ChecksSource;

/// The files of one ingest, as a table: scanning it plans an [`IngestScan`].
#[derive(Debug)]
pub struct IngestTable {
    files: Arc<Vec<FileSource>>,
    format: Format,
    checks: Arc<RowChecks>,
    /// What `checks` were built from.
    source: Arc<ChecksSource>,
    extra_keys: ExtraKeys,
}

impl IngestTable {
    /// The files in `format`, checked by `checks` (built from `source`); an NDJSON reader
    /// adds the keys its records have beyond the contract's to `extra_keys`, for the stage to
    /// report.
    pub(crate) fn new(
        files: Vec<FileSource>,
        format: Format,
        checks: Arc<RowChecks>,
        source: Arc<ChecksSource>,
        extra_keys: ExtraKeys,
    ) -> Self {
        IngestTable {
            files: Arc::new(files),
            format,
            checks,
            source,
            extra_keys,
        }
    }

    /// What the table is made of, for [`crate::wire`].
    pub(crate) fn parts(&self) -> (&[FileSource], &Format, &ChecksSource) {
        (&self.files, &self.format, &self.source)
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
            self.source.clone(),
            self.extra_keys.clone(),
            projection.cloned(),
        )?))
    }
}

/// Reads and checks a stage's files: one partition per file, or per piece of a file that its
/// reader cuts ([`FormatReader::partitions`](super::FormatReader::partitions)).
///
/// Its input is the list of pieces: an in-memory table of one row (file, part) per partition.
/// The scan reads, in its partition `i`, the pieces of its input's partition `i`. So a
/// distributed engine that hands each task a slice of a stage's partitions (Ballista cuts its
/// leaves, in-memory tables among them, to the slice) gives this scan exactly the pieces of
/// that slice; a leaf of its own would be read whole by every task. Each file's store comes
/// from the runtime the task runs in.
#[derive(Debug)]
pub struct IngestScan {
    /// The pieces to read: `file` (an index into `files`) and `part`, one row per partition.
    input: Arc<dyn ExecutionPlan>,
    files: Arc<Vec<FileSource>>,
    format: Format,
    checks: Arc<RowChecks>,
    source: Arc<ChecksSource>,
    extra_keys: ExtraKeys,
    /// The columns of the checked rows it yields; `None`: all.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

/// The pieces of `files` in `format`, as an in-memory table of one partition per piece.
fn pieces(files: &[FileSource], format: &Format) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("file", DataType::UInt32, false),
        Field::new("part", DataType::UInt32, false),
    ]));
    let reader = format.reader();
    let partitions = files
        .iter()
        .enumerate()
        .flat_map(|(f, file)| (0..reader.partitions(file)).map(move |p| (f, p)))
        .map(|(f, p)| {
            Ok(vec![RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt32Array::from(vec![f as u32])),
                    Arc::new(UInt32Array::from(vec![p as u32])),
                ],
            )?])
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(MemorySourceConfig::try_new_exec(&partitions, schema, None)?)
}

impl IngestScan {
    /// A scan of every piece of `files`.
    pub(crate) fn try_new(
        files: Arc<Vec<FileSource>>,
        format: Format,
        checks: Arc<RowChecks>,
        source: Arc<ChecksSource>,
        extra_keys: ExtraKeys,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let input = pieces(&files, &format)?;
        Self::over(input, files, format, checks, source, extra_keys, projection)
    }

    /// A scan of the pieces `input` lists.
    pub(crate) fn over(
        input: Arc<dyn ExecutionPlan>,
        files: Arc<Vec<FileSource>>,
        format: Format,
        checks: Arc<RowChecks>,
        source: Arc<ChecksSource>,
        extra_keys: ExtraKeys,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(checks.schema().project(p)?),
            None => checks.schema().clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(
                input.properties().output_partitioning().partition_count(),
            ),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(IngestScan {
            input,
            files,
            format,
            checks,
            source,
            extra_keys,
            projection,
            schema,
            properties: Arc::new(properties),
        })
    }

    /// The same scan over other pieces.
    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        Self::over(
            input,
            self.files.clone(),
            self.format.clone(),
            self.checks.clone(),
            self.source.clone(),
            self.extra_keys.clone(),
            self.projection.clone(),
        )
    }

    /// What the scan is made of, for [`crate::wire`]; its input (the pieces) travels as a
    /// plan of its own.
    pub(crate) fn parts(&self) -> (&[FileSource], &Format, &ChecksSource, Option<&Vec<usize>>) {
        (
            &self.files,
            &self.format,
            &self.source,
            self.projection.as_ref(),
        )
    }

    /// The rows of one piece, projected.
    fn read(
        &self,
        file: usize,
        part: usize,
        context: &TaskContext,
    ) -> DfResult<SendableRecordBatchStream> {
        let file = self.files.get(file).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "IngestScan has {} files, not {}",
                self.files.len(),
                file + 1
            ))
        })?;
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

impl DisplayAs for IngestScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "IngestScan: format={}, files={}, partitions={}",
            self.format.name(),
            self.files.len(),
            self.properties.output_partitioning().partition_count()
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
        vec![&self.input]
    }

    // A piece is a partition: spreading the list of pieces over more partitions would only
    // leave some empty.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "IngestScan has one input: the pieces it reads".into(),
            ));
        }
        Ok(Arc::new(self.with_input(children.remove(0))?))
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
        let count = self.properties.output_partitioning().partition_count();
        if partition >= count {
            return Err(DataFusionError::Internal(format!(
                "IngestScan has {count} partitions, not {}",
                partition + 1
            )));
        }
        let pieces = self.input.execute(partition, context.clone())?;
        // Each batch of the input names pieces; each piece becomes its rows, in order.
        let scan = self.with_input(self.input.clone())?;
        let rows = pieces
            .map(move |batch| {
                let batch = batch?;
                let file = batch.column(0).as_primitive::<UInt32Type>();
                let part = batch.column(1).as_primitive::<UInt32Type>();
                let streams = (0..batch.num_rows())
                    .map(|i| scan.read(file.value(i) as usize, part.value(i) as usize, &context))
                    .collect::<DfResult<Vec<_>>>()?;
                Ok::<_, DataFusionError>(futures::stream::iter(streams).flatten())
            })
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rows,
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::contract::Contract;
    use crate::source::{Dialect, Piece};
    use crate::validate::Parse;
    use segflow_core::datafusion::arrow::array::{AsArray, Int64Array};
    use segflow_core::datafusion::arrow::datatypes::{Int32Type, Int64Type};
    use segflow_core::datafusion::physical_plan::{common, displayable};
    use segflow_core::datafusion::prelude::SessionContext;

    /// A CSV file of `ids` cut into two pieces at the record `cut` starts.
    pub(crate) fn table(dir: &std::path::Path, ids: &[&str], cut: usize) -> IngestTable {
        let mut text = String::from("id,n\n");
        let mut start = 0;
        for (i, id) in ids.iter().enumerate() {
            if i == cut {
                start = text.len() as u64;
            }
            text.push_str(&format!("{id},{i}\n"));
        }
        let size = text.len() as u64;
        let pieces = vec![
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
        ];
        table_with(dir, text.as_bytes(), pieces)
    }

    /// The file `text` (a header `id,n` first) under a contract of a required string `id` and
    /// an int `n`, read in `pieces`.
    fn table_with(dir: &std::path::Path, text: &[u8], pieces: Vec<Piece>) -> IngestTable {
        std::fs::write(
            dir.join("t.yaml"),
            "table: t\ncolumns:\n  - { name: id, type: string, nullable: false }\n  \
             - { name: n, type: int }\n",
        )
        .unwrap();
        let source = ChecksSource {
            contract: Contract::load(&dir.join("t.yaml")).unwrap(),
            parses: vec![Parse { format: None }; 2],
            now: chrono::Utc::now(),
            extra_keys_fail: false,
        };
        let checks = source.checks().unwrap();
        let path = dir.join("t.csv");
        std::fs::write(&path, text).unwrap();
        let file = FileSource {
            url: url::Url::from_file_path(&path).unwrap(),
            size: text.len() as u64,
            compression: segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType::UNCOMPRESSED,
            names: vec!["id".into(), "n".into()],
            positions: vec![Some(0), Some(1)],
            header: vec!["id".into(), "n".into()],
            pieces,
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
            Arc::new(source),
            ExtraKeys::new(false),
        )
    }

    proptest::proptest! {
        /// Any bytes after the header: the scan never panics, and either fails with an error
        /// or accounts for every record the csv crate finds, each one a good row or a
        /// quarantined one.
        #[test]
        fn prop_any_bytes_scan_to_good_rows_and_quarantine(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            csvish in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"a"[..], b"12", b",", b"\"", b"\n", b"\r\n", b"\xff", b"x,1\n",
                ]),
                0..80,
            ),
        ) {
            for body in [body, csvish.concat()] {
                let dir = tempfile::tempdir().unwrap();
                let mut text = b"id,n\n".to_vec();
                text.extend(&body);
                let whole = vec![Piece {
                    start: 0,
                    end: text.len() as u64,
                    first_line: 1,
                }];
                let table = table_with(dir.path(), &text, whole);
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let read = rt.block_on(async {
                    let ctx = SessionContext::new();
                    let plan = table.scan(&ctx.state(), None, &[], None).await?;
                    common::collect(plan.execute(0, ctx.task_ctx())?).await
                });
                let Ok(batches) = read else { continue };
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .from_reader(&text[..]);
                let records = reader.byte_records().filter(Result::is_ok).count();
                proptest::prop_assert_eq!(rows, records);
            }
        }
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

    #[tokio::test]
    async fn a_scan_over_a_slice_of_its_pieces_reads_only_them() {
        // What a distributed engine does to a task's leaves: keep the partitions of its slice.
        use segflow_core::datafusion::datasource::source::DataSourceExec;
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let table = table(dir.path(), &["a", "b", "c", "d", "e"], 2);
        let line = table.schema().index_of(super::super::LINE_NUMBER).unwrap();
        let plan = table
            .scan(&ctx.state(), Some(&vec![line]), &[], None)
            .await
            .unwrap();
        let pieces = plan.children()[0].clone();
        let source = pieces.downcast_ref::<DataSourceExec>().unwrap();
        let memory = (source.data_source().as_ref() as &dyn std::any::Any)
            .downcast_ref::<MemorySourceConfig>()
            .unwrap();
        let second = MemorySourceConfig::try_new_exec(
            &memory.partitions()[1..],
            memory.original_schema(),
            None,
        )
        .unwrap();
        let sliced = plan
            .replace_children(
                vec![second],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )
            .unwrap();
        assert_eq!(
            sliced.properties().output_partitioning().partition_count(),
            1
        );
        let batches = common::collect(sliced.execute(0, ctx.task_ctx()).unwrap())
            .await
            .unwrap();
        let lines: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(lines, [4, 5, 6], "the second piece only");
    }
}
