//! Run tables: stage outputs written as Parquet under the run's work prefix.
//!
//! Each output partition of the stage's physical plan streams into its own Parquet file, so all
//! cores write at once and memory stays bounded by DataFusion's batches. Rows are counted on the
//! way through for progress and the manifest. The table is then registered in the session under
//! its logical name, with the plan's schema, for the stages that follow. A table the run will
//! append to a Delta table, or overwrite it with, is written into that table instead (see
//! [`crate::publish`]), and read back from its files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, cast, ident, lit};
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream_partitioned};
use datafusion::prelude::DataFrame;
use deltalake::kernel::Add;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use url::Url;

use crate::error::{Error, Result};
use crate::publish::{DeltaSink, FileWriter, WrittenFiles};
use crate::stage::StageContext;
use crate::storage;

/// A table produced during the run.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    /// Directory (prefix) holding the table's Parquet files.
    pub url: Url,
    pub rows: u64,
    pub schema: SchemaRef,
}

/// Where a stage's output is written.
pub(crate) enum Destination<'a> {
    /// A run table under the run's work prefix.
    Work,
    /// The data files of the next version of this Delta table, partitioned by these columns
    /// (see [`crate::publish`]).
    Delta(&'a Url, &'a [String]),
}

/// Writes `df` as run table `name`; for [`Destination::Delta`] also the files written, for the
/// publish step to commit.
pub(crate) async fn materialize(
    cx: &StageContext<'_>,
    name: &str,
    df: DataFrame,
    destination: Destination<'_>,
) -> Result<(TableInfo, Option<WrittenFiles>)> {
    let started = std::time::Instant::now();
    let (plan, streams) = start(cx, name, df).await?;
    let output = Output::new(cx, name, destination, plan.schema())?;
    let rows = output.rows.clone();
    let mut writes = tokio::task::JoinSet::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let mut part = output
            .part(i)
            .map_err(cx.df_err(format!("writing table `{name}`")))?;
        let rows = rows.clone();
        writes.spawn(async move {
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                part.write(&batch).await?;
            }
            Ok(vec![part.close().await?])
        });
    }
    let mut adds = wait(cx, name, writes, &[rows]).await?;
    log_written(cx, name, output.rows(), started, &plan);
    output.finish(cx, adds.pop().unwrap_or_default()).await
}

/// Sees a batch of rows on their way to a table ([`Split::observe`]).
pub type Observe = Arc<dyn Fn(&RecordBatch) -> Result<()> + Send + Sync>;

/// How [`materialize_split`] writes one plan as two tables.
pub struct Split {
    /// A boolean column of the plan: its true rows go to the first table, the others (false
    /// or null) to the second.
    pub by: String,
    /// The first table's name and columns (of the plan's, in this order).
    pub first: (String, Vec<String>),
    /// The second table's name and columns.
    pub second: (String, Vec<String>),
    /// Sees every batch of the first table's rows, with all the plan's columns, before it is
    /// written (an ingest collects its key hashes from them).
    pub observe: Option<Observe>,
}

/// Writes `df` as two run tables in one pass ([`Split`]): the first one into `destination`,
/// the second under the run's work prefix. For a stage whose rows go two ways (an ingest's
/// good and bad rows) without writing them all once and reading them back to divide them.
pub(crate) async fn materialize_split(
    cx: &StageContext<'_>,
    df: DataFrame,
    split: Split,
    destination: Destination<'_>,
) -> Result<[(TableInfo, Option<WrittenFiles>); 2]> {
    let started = std::time::Instant::now();
    let label = format!("{} and {}", split.first.0, split.second.0);
    let (plan, streams) = start(cx, &label, df).await?;
    let plan_schema = plan.schema();
    let index = |columns: &[String]| -> Result<Vec<usize>> {
        columns
            .iter()
            .map(|c| plan_schema.index_of(c))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Internal(format!("splitting into {label}: {e}")))
    };
    let by = index(std::slice::from_ref(&split.by))?[0];
    let (first_columns, second_columns) = (index(&split.first.1)?, index(&split.second.1)?);
    let project = |columns: &[usize]| {
        plan_schema
            .project(columns)
            .map(Arc::new)
            .map_err(|e| Error::Internal(format!("splitting into {label}: {e}")))
    };
    let first = Output::new(cx, &split.first.0, destination, project(&first_columns)?)?;
    let second = Output::new(
        cx,
        &split.second.0,
        Destination::Work,
        project(&second_columns)?,
    )?;
    let counts = [first.rows.clone(), second.rows.clone()];
    let mut writes = tokio::task::JoinSet::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let err = || cx.df_err(format!("writing {label}"));
        let mut parts = [
            first.part(i).map_err(err())?,
            second.part(i).map_err(err())?,
        ];
        let counts = counts.clone();
        let columns = [first_columns.clone(), second_columns.clone()];
        let observe = split.observe.clone();
        writes.spawn(async move {
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let Some(mask) = batch.column(by).as_boolean_opt() else {
                    return Err(DataFusionError::Internal(format!(
                        "column {by} to split by is not a boolean"
                    )));
                };
                // Null counts as false (`prep_null_mask_filter` expects some null).
                let mask = match mask.null_count() {
                    0 => mask.clone(),
                    _ => prep_null_mask_filter(mask),
                };
                let masks = [mask.clone(), arrow::compute::not(&mask)?];
                for (k, mask) in masks.iter().enumerate() {
                    let rows = filter_record_batch(&batch, mask)?;
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    if k == 0
                        && let Some(observe) = &observe
                    {
                        observe(&rows).map_err(|e| DataFusionError::External(Box::new(e)))?;
                    }
                    counts[k].fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                    parts[k].write(&rows.project(&columns[k])?).await?;
                }
            }
            let [a, b] = parts;
            Ok(vec![a.close().await?, b.close().await?])
        });
    }
    let mut adds = wait(cx, &label, writes, &counts).await?.into_iter();
    log_written(cx, &label, first.rows() + second.rows(), started, &plan);
    let (a, b) = (
        adds.next().unwrap_or_default(),
        adds.next().unwrap_or_default(),
    );
    Ok([first.finish(cx, a).await?, second.finish(cx, b).await?])
}

/// Plans `df` and starts one stream per output partition.
async fn start(
    cx: &StageContext<'_>,
    name: &str,
    df: DataFrame,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<SendableRecordBatchStream>)> {
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df
        .create_physical_plan()
        .await
        .map_err(cx.df_err(format!("planning table `{name}`")))?;
    let streams = execute_stream_partitioned(plan.clone(), task_ctx)
        .map_err(cx.df_err(format!("starting table `{name}`")))?;
    Ok((plan, streams))
}

/// Waits for every partition's writer, reporting the rows written (the sum of `counts`) while
/// they run; per output, the Add actions of every partition's files.
///
/// Each partition's stream and writer is a task of its own. Polled together from this task
/// (`try_join_all`), every partition's operators ran on the one thread that polls it, and an
/// ingest of 845k orders kept 0.75 of 2 cores busy; spawned, the runtime's workers run them
/// side by side. Dropping the set (on an error) aborts the others.
async fn wait(
    cx: &StageContext<'_>,
    name: &str,
    mut writes: tokio::task::JoinSet<std::result::Result<Vec<Vec<Add>>, DataFusionError>>,
    counts: &[Arc<AtomicU64>],
) -> Result<Vec<Vec<Add>>> {
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut adds: Vec<Vec<Add>> = vec![Vec::new(); counts.len()];
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            done = writes.join_next() => match done {
                None => break,
                Some(Ok(r)) => {
                    let parts = r.map_err(cx.df_err(format!("computing table `{name}`")))?;
                    for (all, part) in adds.iter_mut().zip(parts) {
                        all.extend(part);
                    }
                }
                Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Some(Err(e)) => {
                    return Err(Error::Internal(format!("writing table `{name}`: {e}")));
                }
            },
            _ = tick.tick() => cx.report_rows(total()),
        }
    }
    cx.report_rows(total());
    Ok(adds)
}

fn log_written(
    cx: &StageContext<'_>,
    name: &str,
    rows: u64,
    started: std::time::Instant,
    plan: &Arc<dyn ExecutionPlan>,
) {
    tracing::debug!(
        stage = cx.stage_id,
        table = name,
        rows,
        ms = started.elapsed().as_millis() as u64,
        "run table written"
    );
    // EXPLAIN ANALYZE for every table a run writes, without rerunning anything: which operator
    // of which stage took the time (`--log warn,segflow::plan=debug`).
    tracing::debug!(
        target: "segflow::plan",
        stage = cx.stage_id,
        table = name,
        "executed plan, with metrics:\n{}",
        DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true)
    );
}

/// One table being written: where, how, and the rows so far.
struct Output<'a> {
    name: String,
    destination: Destination<'a>,
    dir: Url,
    sink: Sink,
    /// The schema of the rows written.
    rows_schema: SchemaRef,
    /// The table's schema, as registered: the rows', or the Delta table's.
    schema: SchemaRef,
    rows: Arc<AtomicU64>,
}

impl<'a> Output<'a> {
    fn new(
        cx: &StageContext<'_>,
        name: &str,
        destination: Destination<'a>,
        rows_schema: SchemaRef,
    ) -> Result<Self> {
        let (dir, sink) = match destination {
            Destination::Work => {
                let dir = storage::as_dir(&storage::join(cx.work_dir(), name));
                let sink = Sink::Work {
                    store: storage::store_for(cx.ctx, &dir)?,
                    prefix: storage::store_path(&dir)?,
                    props: Arc::new(run_table_properties(&dir, &rows_schema)),
                };
                (dir, sink)
            }
            Destination::Delta(url, partition_by) => (
                storage::as_dir(url),
                Sink::Delta(DeltaSink::new(cx.ctx, url, &rows_schema, partition_by)?),
            ),
        };
        let schema = match &sink {
            Sink::Work { .. } => rows_schema.clone(),
            Sink::Delta(d) => d.schema().clone(),
        };
        Ok(Output {
            name: name.to_string(),
            destination,
            dir,
            sink,
            rows_schema,
            schema,
            rows: Arc::new(AtomicU64::new(0)),
        })
    }

    fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The writer of partition `i`.
    fn part(&self, i: usize) -> std::result::Result<PartWriter, DataFusionError> {
        Ok(match &self.sink {
            Sink::Work {
                store,
                prefix,
                props,
            } => {
                let path = prefix.clone().join(format!("part-{i:05}.parquet").as_str());
                let writer = BufWriter::new(store.clone(), path);
                PartWriter::Work(AsyncArrowWriter::try_new(
                    writer,
                    self.rows_schema.clone(),
                    Some(props.as_ref().clone()),
                )?)
            }
            Sink::Delta(sink) => PartWriter::Delta(sink.writer()),
        })
    }

    /// Registers the table written, with the Add actions of its files for a Delta
    /// destination.
    async fn finish(
        self,
        cx: &StageContext<'_>,
        mut adds: Vec<Add>,
    ) -> Result<(TableInfo, Option<WrittenFiles>)> {
        let name = self.name.as_str();
        let written = match self.destination {
            Destination::Work => {
                register(
                    cx,
                    name,
                    std::slice::from_ref(&self.dir),
                    self.schema.clone(),
                )
                .await?;
                None
            }
            Destination::Delta(url, partition_by) => {
                // The order of the files does not change the table; sorted, the manifest and
                // the commit list them the same way on every run.
                adds.sort_by(|a: &Add, b: &Add| a.path.cmp(&b.path));
                let written = WrittenFiles {
                    url: url.clone(),
                    adds,
                    partition_by: partition_by.to_vec(),
                    schema: self.schema.clone(),
                };
                if partition_by.is_empty() {
                    register(cx, name, &written.file_urls()?, self.schema.clone()).await?;
                } else {
                    register_partitioned(cx, name, &written).await?;
                }
                Some(written)
            }
        };
        Ok((
            TableInfo {
                name: self.name.clone(),
                url: self.dir,
                rows: self.rows.load(Ordering::Relaxed),
                schema: self.schema,
            },
            written,
        ))
    }
}

/// Where one table's batches are written.
#[derive(Clone)]
enum Sink {
    Work {
        store: Arc<dyn ObjectStore>,
        prefix: object_store::path::Path,
        props: Arc<WriterProperties>,
    },
    Delta(DeltaSink),
}

/// Writes one partition's batches of a table.
enum PartWriter {
    Work(AsyncArrowWriter<BufWriter>),
    Delta(FileWriter),
}

impl PartWriter {
    async fn write(&mut self, batch: &RecordBatch) -> std::result::Result<(), DataFusionError> {
        match self {
            PartWriter::Work(w) => Ok(w.write(batch).await?),
            PartWriter::Delta(w) => w.write(batch).await.map_err(delta_error),
        }
    }

    /// Finishes the files; their Add actions, for a Delta table.
    async fn close(self) -> std::result::Result<Vec<Add>, DataFusionError> {
        match self {
            PartWriter::Work(w) => {
                w.close().await?;
                Ok(Vec::new())
            }
            PartWriter::Delta(w) => w.close().await.map_err(delta_error),
        }
    }
}

fn delta_error(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Rows per row group of a run table. The async Parquet writer encodes a whole row group into
/// one in-memory buffer before it hands it to the store; at the default 1M rows that buffer
/// grew to tens of MB by doubling for every row group, and perf (DWARF call graphs, orders
/// ingest at M) put 15% of the time in copying it into freshly zeroed huge pages.
const RUN_TABLE_ROW_GROUP_ROWS: usize = 128 * 1024;

/// Run tables are read back a few times within the run and then dropped, so they are written
/// for speed, not size. Measured with perf on an ingest of 845k orders: Snappy was the top
/// symbol (6% of the time) and building dictionaries for text that is mostly unique (ids, raw
/// records) another 3%, before Parquet falls back to plain encoding anyway. On local disk the
/// tables are not compressed at all (ingest 2.9 s -> 1.9 s); in an object store, where bytes
/// cost transfer time, LZ4 (2.3 s). A column that is a dictionary in memory (one value for
/// many rows, such as an ingest's source file) stays one on disk: its keys, not its text.
fn run_table_properties(dir: &Url, schema: &Schema) -> WriterProperties {
    let compression = if dir.scheme() == "file" {
        Compression::UNCOMPRESSED
    } else {
        Compression::LZ4_RAW
    };
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(RUN_TABLE_ROW_GROUP_ROWS));
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Dictionary(..)) {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    props.build()
}

/// Registers run table `name` over `locations`: its directory, or the files written for it
/// into a Delta table (whose directory holds other versions' files too); no files at all is
/// an empty table.
async fn register(
    cx: &StageContext<'_>,
    name: &str,
    locations: &[Url],
    schema: SchemaRef,
) -> Result<()> {
    let err = || cx.df_err(format!("registering table `{name}`"));
    let table: Arc<dyn TableProvider> = if locations.is_empty() {
        Arc::new(MemTable::try_new(schema, vec![vec![]]).map_err(err())?)
    } else {
        listing_table(cx, name, locations, schema)?
    };
    register_provider(cx, name, table)
}

/// Registers `table` as run table `name`, replacing an earlier table of that name.
fn register_provider(
    cx: &StageContext<'_>,
    name: &str,
    table: Arc<dyn TableProvider>,
) -> Result<()> {
    let err = || cx.df_err(format!("registering table `{name}`"));
    cx.ctx.deregister_table(name).map_err(err())?;
    cx.ctx.register_table(name, table).map_err(err())?;
    Ok(())
}

/// Parquet files or directories as one table of `schema`.
fn listing_table(
    cx: &StageContext<'_>,
    name: &str,
    locations: &[Url],
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    let urls = locations
        .iter()
        .map(|u| ListingTableUrl::parse(u.as_str()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(cx.df_err(format!("table `{name}` location")))?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    let table =
        ListingTable::try_new(config).map_err(cx.df_err(format!("registering table `{name}`")))?;
    Ok(Arc::new(table))
}

/// Registers run table `name` over the files written for it into a partitioned Delta table.
/// The files hold every column but the partition columns, whose values are in the Add
/// actions (and the Hive-style directories); a listing of the directories would also find
/// other versions' files. So the table is a union with one scan per partition value, each
/// adding its values as constants, in the table's column order.
async fn register_partitioned(
    cx: &StageContext<'_>,
    name: &str,
    written: &WrittenFiles,
) -> Result<()> {
    let err = || cx.df_err(format!("registering table `{name}`"));
    let schema = &written.schema;
    let partition_by = &written.partition_by;
    let file_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !partition_by.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let mut parts: BTreeMap<Vec<Option<String>>, Vec<Url>> = BTreeMap::new();
    for (add, url) in written.adds.iter().zip(written.file_urls()?) {
        let values = partition_by
            .iter()
            .map(|c| add.partition_values.get(c).cloned().flatten())
            .collect();
        parts.entry(values).or_default().push(url);
    }
    let mut union: Option<DataFrame> = None;
    for (values, urls) in parts {
        let scan = cx
            .ctx
            .read_table(listing_table(cx, name, &urls, file_schema.clone())?)
            .map_err(err())?;
        let columns: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| match partition_by.iter().position(|c| c == f.name()) {
                // Delta writes a partition value as text; a cast reads it back as its type.
                Some(i) => cast(
                    lit(ScalarValue::Utf8(values[i].clone())),
                    f.data_type().clone(),
                )
                .alias(f.name()),
                None => ident(f.name()),
            })
            .collect();
        let part = scan.select(columns).map_err(err())?;
        union = Some(match union {
            None => part,
            Some(u) => u.union(part).map_err(err())?,
        });
    }
    let table: Arc<dyn TableProvider> = match union {
        Some(u) => u.into_view(),
        None => Arc::new(MemTable::try_new(schema.clone(), vec![vec![]]).map_err(err())?),
    };
    register_provider(cx, name, table)
}

impl TableInfo {
    /// An error for a table that should exist but was not produced.
    pub fn missing(stage: &str, name: &str) -> Error {
        Error::Internal(format!(
            "stage `{stage}` declared output `{name}` but did not produce it"
        ))
    }
}
