//! Run tables: stage outputs written as Parquet under the run's work prefix.
//!
//! A stage's plan runs under a [`WriteFiles`] node: each output partition of the plan streams
//! into Parquet files of its own, on whichever machine runs that partition (all cores of this
//! one on the embedded engine, the executors on a cluster), so memory stays bounded by
//! DataFusion's batches and only the list of files comes back. The table is then registered
//! in the session under its logical name, over exactly those files, for the stages that
//! follow. A table the run will append to a Delta table, or overwrite it with, is written into
//! that table instead (see [`crate::publish`]), and read back from its files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream_partitioned};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use url::Url;

use crate::error::{Error, Result};
use crate::files::{TableFile, files_table};
use crate::publish::WrittenFiles;
use crate::stage::StageContext;
use crate::storage;
use crate::write::{
    LocalHooks, Observe, SinkSpec, WriteExec, WriteFiles, WriteSpec, WriteTarget, Written,
    WrittenFile,
};

/// A table produced during the run.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    /// Directory (prefix) holding the table's Parquet files.
    pub url: Url,
    pub rows: u64,
    pub schema: SchemaRef,
    /// The files it was written as, under the run's work prefix or (with their Add actions
    /// in [`WrittenFiles`]) in a Delta table; `None` for a table held in memory. A resumed run
    /// registers a failed run's table over them ([`crate::resume`]).
    pub(crate) files: Option<Vec<TableFile>>,
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
    let schema = Arc::new(df.schema().as_arrow().clone());
    let output = Output::new(cx, name, destination, schema.clone())?;
    let spec = WriteSpec {
        targets: vec![output.target(&schema)],
        split_by: None,
    };
    let hooks = LocalHooks {
        rows: vec![output.rows.clone()],
        observe: None,
    };
    let (mut written, plan) = write(cx, name, df, spec, hooks).await?;
    log_written(cx, name, output.rows(), started, &plan);
    output.finish(cx, written.files.remove(0)).await
}

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
    /// written (an ingest collects its key hashes from them), when the plan runs in this
    /// process ([`SplitTables::observed`]).
    pub observe: Option<Observe>,
}

/// The two tables [`materialize_split`] wrote.
#[derive(Debug, Clone)]
pub struct SplitTables {
    pub first: TableInfo,
    pub second: TableInfo,
    /// Whether [`Split::observe`] saw every row of the first table: false when the plan ran
    /// elsewhere (a cluster), where this process's observer cannot go.
    pub observed: bool,
}

/// Writes `df` as two run tables in one pass ([`Split`]): the first one into `destination`,
/// the second under the run's work prefix. For a stage whose rows go two ways (an ingest's
/// good and bad rows) without writing them all once and reading them back to divide them.
pub(crate) async fn materialize_split(
    cx: &StageContext<'_>,
    df: DataFrame,
    split: Split,
    destination: Destination<'_>,
) -> Result<(SplitTables, [Option<WrittenFiles>; 2])> {
    let started = std::time::Instant::now();
    let label = format!("{} and {}", split.first.0, split.second.0);
    let schema = df.schema().as_arrow().clone();
    let project = |columns: &[String]| -> Result<SchemaRef> {
        let indices = columns
            .iter()
            .map(|c| schema.index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("splitting into {label}: {e}")))?;
        schema
            .project(&indices)
            .map(Arc::new)
            .map_err(|e| Error::Internal(format!("splitting into {label}: {e}")))
    };
    let (first_schema, second_schema) = (project(&split.first.1)?, project(&split.second.1)?);
    let first = Output::new(cx, &split.first.0, destination, first_schema.clone())?;
    let second = Output::new(
        cx,
        &split.second.0,
        Destination::Work,
        second_schema.clone(),
    )?;
    let spec = WriteSpec {
        targets: vec![first.target(&first_schema), second.target(&second_schema)],
        split_by: Some(split.by.clone()),
    };
    let hooks = LocalHooks {
        rows: vec![first.rows.clone(), second.rows.clone()],
        observe: split.observe.clone(),
    };
    let (written, plan) = write(cx, &label, df, spec, hooks).await?;
    log_written(cx, &label, first.rows() + second.rows(), started, &plan);
    let observed = written.in_process;
    let mut files = written.files.into_iter();
    let (a, b) = (
        files.next().unwrap_or_default(),
        files.next().unwrap_or_default(),
    );
    let (first, first_written) = first.finish(cx, a).await?;
    let (second, second_written) = second.finish(cx, b).await?;
    Ok((
        SplitTables {
            first,
            second,
            observed,
        },
        [first_written, second_written],
    ))
}

/// Registers `partitions` (batches of `schema`) as run table `name`. When plans run in this
/// process the batches are the table; when they run on a cluster, this process writes them
/// as the run table's Parquet files, so that the cluster reads them from storage rather than
/// from the plans it is sent.
pub(crate) async fn materialize_batches(
    cx: &StageContext<'_>,
    name: &str,
    schema: SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
) -> Result<TableInfo> {
    let rows = partitions
        .iter()
        .flatten()
        .map(|b| b.num_rows() as u64)
        .sum();
    if !cx.engine().distributed {
        let table = MemTable::try_new(schema.clone(), partitions)
            .map_err(cx.df_err(format!("registering table `{name}`")))?;
        register_provider(cx, name, Arc::new(table))?;
        return Ok(TableInfo {
            name: name.to_string(),
            url: storage::as_dir(&storage::join(cx.work_dir(), name)),
            rows,
            schema,
            files: None,
        });
    }
    let started = std::time::Instant::now();
    let output = Output::new(cx, name, Destination::Work, schema.clone())?;
    let spec = WriteSpec {
        targets: vec![output.target(&schema)],
        split_by: None,
    };
    let source = MemorySourceConfig::try_new_exec(&partitions, schema.clone(), None)
        .map_err(cx.df_err(format!("writing table `{name}`")))?;
    let exec =
        WriteExec::try_new(source, spec).map_err(cx.df_err(format!("writing table `{name}`")))?;
    let plan: Arc<dyn ExecutionPlan> = Arc::new(exec);
    let mut written = execute(cx, name, plan.clone(), cx.ctx.task_ctx(), &[]).await?;
    output.rows.store(rows, Ordering::Relaxed);
    log_written(cx, name, rows, started, &plan);
    Ok(output.finish(cx, written.files.remove(0)).await?.0)
}

/// Plans `df` under a [`WriteFiles`] node for `spec` and runs it: the files written, and the
/// physical plan that ran.
async fn write(
    cx: &StageContext<'_>,
    label: &str,
    df: DataFrame,
    spec: WriteSpec,
    hooks: LocalHooks,
) -> Result<(Written, Arc<dyn ExecutionPlan>)> {
    let counts = hooks.rows.clone();
    let targets = spec.targets.len();
    let (state, input) = df.into_parts();
    let node = WriteFiles::try_new(input, spec)
        .map_err(cx.df_err(format!("planning table `{label}`")))?
        .with_hooks(Arc::new(hooks));
    let plan = state
        .optimize(&LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }))
        .map_err(cx.df_err(format!("planning table `{label}`")))?;
    // A plan the optimizer proved empty (`limit 0`, `where false`) writes no file. It is not
    // sent anywhere: a cluster would get its empty relation without its columns, which the
    // plan format does not keep.
    if let LogicalPlan::Extension(e) = &plan
        && let Some(write) = e.node.as_any().downcast_ref::<WriteFiles>()
        && matches!(
            &write.input,
            LogicalPlan::EmptyRelation(r) if !r.produce_one_row
        )
    {
        let written = Written {
            files: vec![Vec::new(); targets],
            in_process: true,
        };
        let empty: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::empty::EmptyExec::new(crate::write::result_schema()),
        );
        return Ok((written, empty));
    }
    let df = DataFrame::new(state, plan);
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df
        .create_physical_plan()
        .await
        .map_err(cx.df_err(format!("planning table `{label}`")))?;
    let written = execute(cx, label, plan.clone(), task_ctx, &counts).await?;
    Ok((written, plan))
}

/// Runs a write's physical plan, one task per output partition, reporting the rows written
/// (the sum of `counts`, which only a write in this process moves) while it runs.
///
/// Each partition's stream and writer is a task of its own. Polled together from this task
/// (`try_join_all`), every partition's operators ran on the one thread that polls it, and an
/// ingest of 845k orders kept 0.75 of 2 cores busy; spawned, the runtime's workers run them
/// side by side. Dropping the set (on an error) aborts the others.
async fn execute(
    cx: &StageContext<'_>,
    label: &str,
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    counts: &[Arc<AtomicU64>],
) -> Result<Written> {
    let targets = plan
        .downcast_ref::<WriteExec>()
        .map(|w| w.spec().targets.len());
    let in_process = plan
        .downcast_ref::<WriteExec>()
        .is_some_and(WriteExec::has_hooks);
    let streams = execute_stream_partitioned(plan.clone(), task_ctx)
        .map_err(cx.df_err(format!("starting table `{label}`")))?;
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        tasks.spawn(async move {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch?);
            }
            Ok::<_, DataFusionError>(batches)
        });
    }
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut batches = Vec::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(r)) => {
                    batches.extend(r.map_err(cx.df_err(format!("computing table `{label}`")))?);
                }
                Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Some(Err(e)) => {
                    return Err(Error::Internal(format!("writing table `{label}`: {e}")));
                }
            },
            _ = tick.tick() => cx.report_rows(total()),
        }
    }
    // A write that ran elsewhere says how many targets it had only through its rows; the
    // counts stand for them here.
    let targets = targets.unwrap_or(counts.len().max(1));
    for b in &batches {
        tracing::trace!(
            stage = cx.stage_id,
            table = label,
            "write result:\n{}",
            arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                .map(|t| t.to_string())
                .unwrap_or_default()
        );
    }
    let files = crate::write::parse_results(&batches, targets)?;
    if !in_process {
        for (count, files) in counts.iter().zip(&files) {
            count.store(files.iter().map(|f| f.rows).sum(), Ordering::Relaxed);
        }
    }
    cx.report_rows(total());
    cx.record_workers(files.iter().flatten().map(|f| f.worker.as_str()));
    Ok(Written { files, in_process })
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

/// One table being written: where, and the rows so far.
struct Output<'a> {
    name: String,
    destination: Destination<'a>,
    dir: Url,
    /// The table's schema, as registered: the rows', or Delta's form of it.
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
        let (dir, schema) = match destination {
            Destination::Work => {
                let dir = storage::as_dir(&storage::join(cx.work_dir(), name));
                // Registers the store with the session, for this process's writes and reads.
                storage::store_for(cx.ctx, &dir)?;
                (dir, rows_schema)
            }
            Destination::Delta(url, partition_by) => (
                storage::as_dir(url),
                crate::publish::check_sink(cx.ctx, url, &rows_schema, partition_by)?,
            ),
        };
        Ok(Output {
            name: name.to_string(),
            destination,
            dir,
            schema,
            rows: Arc::new(AtomicU64::new(0)),
        })
    }

    fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The write target for rows of `schema` (all of its columns, in order).
    fn target(&self, schema: &Schema) -> WriteTarget {
        let sink = match self.destination {
            Destination::Work => SinkSpec::RunTable {
                dir: self.dir.clone(),
            },
            Destination::Delta(url, partition_by) => SinkSpec::Delta {
                table: url.clone(),
                partition_by: partition_by.to_vec(),
            },
        };
        WriteTarget {
            table: self.name.clone(),
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            sink,
        }
    }

    /// Registers the table over exactly the files written, with the Add actions of its files
    /// for a Delta destination.
    async fn finish(
        self,
        cx: &StageContext<'_>,
        files: Vec<WrittenFile>,
    ) -> Result<(TableInfo, Option<WrittenFiles>)> {
        let name = self.name.as_str();
        let (written, table_files) = match self.destination {
            Destination::Work => {
                let files: Vec<TableFile> = files
                    .iter()
                    .map(|f| TableFile {
                        url: f.url.clone(),
                        size: f.bytes,
                        partition_values: Vec::new(),
                    })
                    .collect();
                register(cx.ctx, name, files.clone(), self.schema.clone())
                    .map_err(cx.df_err(format!("registering table `{name}`")))?;
                (None, files)
            }
            Destination::Delta(url, partition_by) => {
                let adds = files
                    .into_iter()
                    .map(|f| {
                        f.add.ok_or_else(|| {
                            Error::Internal(format!("a file written into {url} has no Add action"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let written = WrittenFiles {
                    url: url.clone(),
                    adds,
                    partition_by: partition_by.to_vec(),
                    schema: self.schema.clone(),
                };
                register_written(cx.ctx, name, &written)
                    .map_err(cx.df_err(format!("registering table `{name}`")))?;
                let files = written.table_files()?;
                (Some(written), files)
            }
        };
        Ok((
            TableInfo {
                name: self.name.clone(),
                url: self.dir,
                rows: self.rows.load(Ordering::Relaxed),
                schema: self.schema,
                files: Some(table_files),
            },
            written,
        ))
    }
}

/// Registers run table `name` over `files`, written for it under a run's work prefix; no
/// files at all is an empty table.
pub(crate) fn register(
    ctx: &SessionContext,
    name: &str,
    files: Vec<TableFile>,
    schema: SchemaRef,
) -> std::result::Result<(), DataFusionError> {
    replace_table(ctx, name, files_table(&schema, &[], files)?)
}

/// Registers `table` as run table `name` in `cx`, replacing an earlier table of that name.
fn register_provider(
    cx: &StageContext<'_>,
    name: &str,
    table: Arc<dyn TableProvider>,
) -> Result<()> {
    replace_table(cx.ctx, name, table).map_err(cx.df_err(format!("registering table `{name}`")))
}

fn replace_table(
    ctx: &SessionContext,
    name: &str,
    table: Arc<dyn TableProvider>,
) -> std::result::Result<(), DataFusionError> {
    ctx.deregister_table(name)?;
    ctx.register_table(name, table)?;
    Ok(())
}

/// Registers run table `name` over the files written for it into a Delta table (whose
/// directory holds other versions' files too).
pub(crate) fn register_written(
    ctx: &SessionContext,
    name: &str,
    written: &WrittenFiles,
) -> std::result::Result<(), DataFusionError> {
    let files = written
        .table_files()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    replace_table(
        ctx,
        name,
        files_table(&written.schema, &written.partition_by, files)?,
    )
}

impl TableInfo {
    /// An error for a table that should exist but was not produced.
    pub fn missing(stage: &str, name: &str) -> Error {
        Error::Internal(format!(
            "stage `{stage}` declared output `{name}` but did not produce it"
        ))
    }
}
