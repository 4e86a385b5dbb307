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
use datafusion::physical_plan::execute_stream_partitioned;
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
use crate::publish::{DeltaSink, WrittenFiles};
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
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df
        .create_physical_plan()
        .await
        .map_err(cx.df_err(format!("planning table `{name}`")))?;
    let plan_schema = plan.schema();
    let streams = execute_stream_partitioned(plan.clone(), task_ctx)
        .map_err(cx.df_err(format!("starting table `{name}`")))?;
    let rows = Arc::new(AtomicU64::new(0));

    let (dir, sink) = match destination {
        Destination::Work => {
            let dir = storage::as_dir(&storage::join(cx.work_dir(), name));
            let sink = Sink::Work {
                store: storage::store_for(cx.ctx, &dir)?,
                prefix: storage::store_path(&dir)?,
                props: Arc::new(run_table_properties(&dir, &plan_schema)),
            };
            (dir, sink)
        }
        Destination::Delta(url, partition_by) => (
            storage::as_dir(url),
            Sink::Delta(DeltaSink::new(cx.ctx, url, &plan_schema, partition_by)?),
        ),
    };
    let schema = match &sink {
        Sink::Work { .. } => plan_schema.clone(),
        Sink::Delta(d) => d.schema().clone(),
    };

    // Each partition's stream and writer is a task of its own. Polled together from this task
    // (`try_join_all`), every partition's operators ran on the one thread that polls it, and
    // an ingest of 845k orders kept 0.75 of 2 cores busy; spawned, the runtime's workers run
    // them side by side. Dropping the set (on an error) aborts the others.
    let mut writes = tokio::task::JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let sink = sink.clone();
        let rows = rows.clone();
        let plan_schema = plan_schema.clone();
        writes.spawn(async move { sink.write(i, stream, plan_schema, &rows).await });
    }
    // Wait for every writer; report progress while they run.
    let mut adds = Vec::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            done = writes.join_next() => match done {
                None => break,
                Some(Ok(r)) => adds.extend(r.map_err(cx.df_err(format!("computing table `{name}`")))?),
                Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Some(Err(e)) => {
                    return Err(Error::Internal(format!("writing table `{name}`: {e}")));
                }
            },
            _ = tick.tick() => cx.report_rows(rows.load(Ordering::Relaxed)),
        }
    }
    let rows = rows.load(Ordering::Relaxed);
    cx.report_rows(rows);
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
    let written = match destination {
        Destination::Work => {
            register(cx, name, std::slice::from_ref(&dir), schema.clone()).await?;
            None
        }
        Destination::Delta(url, partition_by) => {
            // The order of the files does not change the table; sorted, the manifest and the
            // commit list them the same way on every run.
            adds.sort_by(|a: &Add, b: &Add| a.path.cmp(&b.path));
            let written = WrittenFiles {
                url: url.clone(),
                adds,
                partition_by: partition_by.to_vec(),
                schema: schema.clone(),
            };
            if partition_by.is_empty() {
                register(cx, name, &written.file_urls()?, schema.clone()).await?;
            } else {
                register_partitioned(cx, name, &written).await?;
            }
            Some(written)
        }
    };
    Ok((
        TableInfo {
            name: name.to_string(),
            url: dir,
            rows,
            schema,
        },
        written,
    ))
}

/// How one partition's batches are written.
#[derive(Clone)]
enum Sink {
    Work {
        store: Arc<dyn ObjectStore>,
        prefix: object_store::path::Path,
        props: Arc<WriterProperties>,
    },
    Delta(DeltaSink),
}

impl Sink {
    /// Writes partition `i`'s stream; the Add actions of the files, for a Delta sink.
    async fn write(
        &self,
        i: usize,
        mut stream: SendableRecordBatchStream,
        schema: SchemaRef,
        rows: &AtomicU64,
    ) -> std::result::Result<Vec<Add>, DataFusionError> {
        match self {
            Sink::Work {
                store,
                prefix,
                props,
            } => {
                let path = prefix.clone().join(format!("part-{i:05}.parquet").as_str());
                let writer = BufWriter::new(store.clone(), path);
                let mut w =
                    AsyncArrowWriter::try_new(writer, schema, Some(props.as_ref().clone()))?;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    w.write(&batch).await?;
                }
                w.close().await?;
                Ok(Vec::new())
            }
            Sink::Delta(sink) => {
                let delta = |e: deltalake::DeltaTableError| DataFusionError::External(Box::new(e));
                let mut w = sink.writer();
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    w.write(&batch).await.map_err(delta)?;
                }
                w.close().await.map_err(delta)
            }
        }
    }
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
