//! The publish protocol: how a run's tables become visible to readers.
//!
//! ```text
//!  stage runs ──> run table under <runs>/<run_id>/work/<table>/   (invisible to readers)
//!       │
//!  checks pass ──> next stage ... all stages and checks pass
//!       │
//!  publish ──> Delta write: new data files under <url>/, then one commit to <url>/_delta_log/
//!       │                     (files without a commit are invisible; vacuum removes them)
//!  pointer  ──> <runs>/_published.json: this run's versions (crate::pointer)
//!       │
//!  manifest ──> <runs>/<run_id>.json, written last
//! ```
//!
//! A run table bound for an append or a whole overwrite of a table, partitioned or not, is
//! written straight into the table's location instead, and publishing it is the commit alone
//! ([`written`]: write once).
//!
//! Object stores cannot rename a directory, so outputs are Delta Lake tables: a reader sees the
//! previous version until the commit file appears, and then the whole new version. A run that
//! fails or is killed before its commit leaves the table exactly as it was. Nothing is published
//! until every stage and check of the run has passed. Each table commits on its own: a reader
//! needing several tables of one run reads them at the versions `_published.json` names.
//! Every commit carries the run's mark, so that one whose answer was lost is found in the log
//! (`publish/reconcile.rs`).

use std::sync::Arc;

use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::table::builder::DeltaTableBuilder;
use url::Url;

pub(crate) mod reconcile;
pub mod vacuum;
mod written;

pub(crate) use written::{FileWriter, check_sink, commit as commit_written, delta_schema};
pub use written::{WrittenFiles, writes_directly};

use crate::error::{Error, Result};
use crate::manifest::PublishReport;
use crate::stage::RunInfo;
use crate::storage;

/// A request, made by a stage, to publish one of the run's tables once the run has passed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PublishRequest {
    /// The run table to publish.
    pub table: String,
    /// The name readers know the table by, for reports and the Delta table name, when it
    /// differs from the run table's (an incremental load publishes only its new rows).
    pub name: Option<String>,
    /// Where the Delta table lives.
    pub url: Url,
    /// Columns to partition the Delta table by (Hive style directories).
    pub partition_by: Vec<String>,
    /// Whether a different schema may replace the table's current one. Off by default: a
    /// changed output schema breaks readers, so it should be a deliberate choice. Without it,
    /// the run's table may still add columns (they are merged into the table's schema).
    pub allow_schema_change: bool,
    /// Replace the table's rows (`overwrite`, the default), add to them (`append`, for logs
    /// such as the quarantine, where each run adds its rows in one commit), or replace only the
    /// partitions the run's rows fall in (`replace_partitions`, for snapshots by date such as
    /// the segment history: rerunning a date replaces that date's rows, keeping the others).
    pub mode: PublishMode,
    /// With `overwrite`: replace only the rows where this column holds one of these values
    /// (Delta's replaceWhere), in one commit; the run's rows must all match. An incremental
    /// ingest replaces the rows of the files it read this way.
    pub replace_where: Option<(String, Vec<String>)>,
    /// Extra entries for the commit's info (e.g. the ingest ledger), beside the run id.
    pub commit_info: Vec<(String, serde_json::Value)>,
}

impl PublishRequest {
    /// The table's name for readers and reports.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.table)
    }
}

/// How a run's rows meet the rows already published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    #[default]
    Overwrite,
    Append,
    /// Needs exactly one `partition_by` column.
    ReplacePartitions,
}

/// Writes `request.table` as a new version of the Delta table at `request.url`.
pub async fn publish(
    ctx: &SessionContext,
    request: &PublishRequest,
    run: &RunInfo,
    rows: u64,
) -> Result<PublishReport> {
    let fail = |source: deltalake::DeltaTableError| Error::Publish {
        table: request.display_name().to_string(),
        url: request.url.to_string(),
        source: Box::new(source),
    };
    if request.url.scheme() == "file"
        && let Ok(dir) = request.url.to_file_path()
    {
        std::fs::create_dir_all(&dir).map_err(|e| Error::Storage {
            location: request.url.to_string(),
            message: format!("cannot create the table directory: {e}"),
            source: None,
        })?;
    }
    let table = open_or_new(ctx, &request.url).await?.map_err(fail)?;
    let before = table.version();
    let plan = ctx
        .table(request.table.as_str())
        .await
        .map_err(|source| Error::DataFusion {
            stage: "publish".into(),
            context: format!("reading run table `{}`", request.table),
            source,
        })?
        .into_unoptimized_plan();
    if let Some(report) = unchanged(request, before, rows) {
        return Ok(report);
    }
    let txn = reconcile::transaction(run, &request.table);
    let mut write = table
        .write(Vec::new())
        .with_input_plan(plan)
        .with_session_state(Arc::new(delta_session(ctx)))
        .with_save_mode(match request.mode {
            PublishMode::Overwrite | PublishMode::ReplacePartitions => SaveMode::Overwrite,
            PublishMode::Append => SaveMode::Append,
        })
        .with_table_name(request.display_name().to_string())
        .with_commit_properties(reconcile::properties(request, run, &txn));
    if !request.partition_by.is_empty() {
        write = write.with_partition_columns(request.partition_by.clone());
    }
    let replace_where = match (request.mode, request.partition_by.as_slice()) {
        (PublishMode::ReplacePartitions, [column]) => Some((
            column.clone(),
            partition_values(ctx, &request.table, column).await?,
        )),
        (PublishMode::ReplacePartitions, _) => {
            return Err(Error::Internal(format!(
                "table `{}`: replace_partitions needs exactly one partition_by column",
                request.display_name()
            )));
        }
        _ => request.replace_where.clone(),
    };
    if let Some((column, values)) = &replace_where
        && before.is_some()
    {
        use datafusion::prelude::{col, lit};
        let values = values.iter().map(|v| lit(v.clone())).collect();
        write = write.with_replace_where(col(column.as_str()).in_list(values, false));
    }
    // Columns may be added to a published table (output contract v1: columns are only ever
    // added), and old rows read null in them; replacing the schema otherwise takes
    // `allow_schema_change`. A retyped column fails the commit in either mode.
    write = write.with_schema_mode(if request.allow_schema_change {
        SchemaMode::Overwrite
    } else {
        SchemaMode::Merge
    });
    let version = match write.await {
        Ok(table) => table.version().ok_or_else(|| {
            Error::Internal(format!(
                "Delta table {} has no version after a commit",
                request.url
            ))
        })?,
        Err(e) => match reconcile::landed(ctx, &request.url, before, &txn.app_id).await? {
            Some(v) => {
                tracing::warn!(table = %request.url, version = v,
                    "the commit's answer was lost; the Delta log shows it landed");
                v
            }
            None => return Err(fail(e)),
        },
    };
    Ok(PublishReport {
        table: request.display_name().to_string(),
        url: request.url.to_string(),
        previous_version: before,
        version,
        rows,
    })
}

/// The report of a publish that commits nothing. Appending nothing, or replacing the
/// partitions of no rows (there are none), would only add an empty version to an existing
/// table: a rerun that found no new bad rows leaves the quarantine log as it was, a run without
/// changes the change feed.
fn unchanged(request: &PublishRequest, before: Option<u64>, rows: u64) -> Option<PublishReport> {
    let version = before?;
    let adds_nothing = matches!(
        request.mode,
        PublishMode::Append | PublishMode::ReplacePartitions
    ) && rows == 0
        && request.commit_info.is_empty();
    adds_nothing.then(|| PublishReport {
        table: request.display_name().to_string(),
        url: request.url.to_string(),
        previous_version: before,
        version,
        rows,
    })
}

/// What every commit of a run records beside its actions: the run, the pipeline, and the
/// request's own entries (the ingest ledger).
fn commit_metadata(request: &PublishRequest, run: &RunInfo) -> Vec<(String, serde_json::Value)> {
    let mut metadata = vec![
        ("segflow.run_id".to_string(), serde_json::json!(run.run_id)),
        (
            "segflow.pipeline".to_string(),
            serde_json::json!(run.pipeline),
        ),
    ];
    metadata.extend(request.commit_info.iter().cloned());
    metadata
}

/// Whether a Delta table exists at `url` (its log has entries).
pub async fn is_table(ctx: &SessionContext, url: &Url) -> Result<bool> {
    storage::has_objects(ctx, &storage::join(url, "_delta_log/")).await
}

/// The latest version of the Delta table at `url` (the newest commit file in its log, one
/// listing); `None` while there is none.
pub async fn latest_version(ctx: &SessionContext, url: &Url) -> Result<Option<u64>> {
    let log = storage::as_dir(&storage::join(url, "_delta_log"));
    let store = storage::store_for(ctx, &log)?;
    let prefix = storage::store_path(&log)?;
    let mut latest = None;
    let mut listing = store.list(Some(&prefix));
    while let Some(meta) = futures::TryStreamExt::try_next(&mut listing)
        .await
        .map_err(|e| Error::Storage {
            location: log.to_string(),
            message: "cannot list the Delta log".into(),
            source: Some(e),
        })?
    {
        let version = meta
            .location
            .filename()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|v| v.parse::<u64>().ok());
        latest = latest.max(version);
    }
    Ok(latest)
}

/// The current version of the published Delta table at `url`, read through `ctx`'s object
/// stores (for stages that read what earlier runs published); `None` while there is none.
pub async fn read_published(
    ctx: &SessionContext,
    url: &Url,
) -> Result<Option<datafusion::prelude::DataFrame>> {
    if !is_table(ctx, url).await? {
        return Ok(None);
    }
    let table = open_table(ctx, url).await?;
    rows(ctx, &table, url).await.map(Some)
}

/// The rows of a loaded Delta table (the one at `url`) as a DataFrame in `ctx`.
///
/// The table is read as what its current version is: Parquet files, with their partition
/// values ([`crate::table::files_table`]). That plan is a distributed engine's to run as
/// it is, where delta-rs's own scan node cannot be sent to an executor. Tables that need
/// more than that to read (deletion vectors, column mapping; segflow writes neither) go
/// through delta-rs's scan on the embedded engine, and are refused on a cluster.
pub async fn rows(
    ctx: &SessionContext,
    table: &DeltaTable,
    url: &Url,
) -> Result<datafusion::prelude::DataFrame> {
    let provider = provider(ctx, table, url).await?;
    ctx.read_table(provider).map_err(|e| Error::Storage {
        location: url.to_string(),
        message: format!("cannot read the table: {e}"),
        source: None,
    })
}

/// The rows of a loaded Delta table (the one at `url`, at the version it was loaded at) as a
/// table provider for `ctx`'s sessions: the same scan [`rows`] plans, for readers that
/// register tables by name (the Flight SQL server).
pub async fn provider(
    ctx: &SessionContext,
    table: &DeltaTable,
    url: &Url,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    use futures::TryStreamExt;
    let fail = |message: String| Error::Storage {
        location: url.to_string(),
        message,
        source: None,
    };
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| fail(format!("cannot register the table's store: {e}")))?;
    let snapshot = table
        .snapshot()
        .map_err(|e| fail(format!("cannot read the table: {e}")))?;
    let schema = snapshot.snapshot().arrow_schema();
    let metadata = snapshot.metadata();
    let partition_by = metadata.partition_columns().to_vec();
    let column_mapping = metadata
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|m| m != "none");
    let views: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| fail(format!("cannot list the table's files: {e}")))?;
    let deletion_vectors = views
        .iter()
        .any(|v| v.deletion_vector_descriptor().is_some());
    if column_mapping || deletion_vectors {
        let feature = if column_mapping {
            "column mapping"
        } else {
            "deletion vectors"
        };
        if crate::session::engine(ctx).distributed {
            return Err(fail(format!(
                "the table uses {feature}, which segflow reads only on the embedded engine; \
                 run this pipeline without --engine, or rewrite the table without {feature}"
            )));
        }
        let provider = table
            .table_provider()
            .await
            .map_err(|e| fail(format!("cannot read the table: {e}")))?;
        return Ok(provider);
    }
    let dir = storage::as_dir(url);
    let files = views
        .iter()
        .map(|v| {
            let values = v.partition_values_map();
            crate::files::TableFile {
                url: storage::join(&dir, &v.path()),
                size: v.size().max(0) as u64,
                partition_values: partition_by
                    .iter()
                    .map(|c| values.get(c).cloned().flatten())
                    .collect(),
            }
        })
        .collect();
    crate::files::files_table(&schema, &partition_by, files)
        .map_err(|e| fail(format!("cannot read the table: {e}")))
}

/// The data files of a loaded Delta table's version: the table's partition columns, and each
/// file's path (relative to the table) with its partition values in that order. For readers
/// that apply what changed between two versions (a warehouse sync's `changes` mode).
pub async fn active_files(
    table: &DeltaTable,
    url: &Url,
) -> Result<(Vec<String>, Vec<(String, Vec<Option<String>>)>)> {
    use futures::TryStreamExt;
    let fail = |message: String| Error::Storage {
        location: url.to_string(),
        message,
        source: None,
    };
    let snapshot = table
        .snapshot()
        .map_err(|e| fail(format!("cannot read the table: {e}")))?;
    let partition_by = snapshot.metadata().partition_columns().to_vec();
    let views: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| fail(format!("cannot list the table's files: {e}")))?;
    let files = views
        .iter()
        .map(|v| {
            let values = v.partition_values_map();
            let values = partition_by
                .iter()
                .map(|c| values.get(c).cloned().flatten())
                .collect();
            (v.path().to_string(), values)
        })
        .collect();
    Ok((partition_by, files))
}

/// The distinct values of `column` in run table `table`, as text (Delta partition values).
async fn partition_values(ctx: &SessionContext, table: &str, column: &str) -> Result<Vec<String>> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::prelude::{cast, ident};
    let err = |source| Error::DataFusion {
        stage: "publish".into(),
        context: format!("listing the `{column}` partitions of `{table}`"),
        source,
    };
    let batches = ctx
        .table(table)
        .await
        .map_err(err)?
        .select(vec![cast(ident(column), DataType::Utf8).alias("v")])
        .and_then(|df| df.distinct())
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let mut values = Vec::new();
    for b in &batches {
        let a = datafusion::common::cast::as_string_array(b.column(0)).map_err(err)?;
        values.extend(a.iter().map(|v| v.unwrap_or_default().to_string()));
    }
    values.sort();
    Ok(values)
}

/// Our session (its object stores, its registered run tables) with delta-rs's query planner,
/// which the Delta writer's plan nodes need.
fn delta_session(ctx: &SessionContext) -> SessionState {
    SessionStateBuilder::new_from_existing(ctx.state())
        .with_query_planner(DeltaPlanner::new())
        .build()
}

/// The table at `url`, loaded, or a new empty handle when nothing is there yet.
async fn open_or_new(
    ctx: &SessionContext,
    url: &Url,
) -> Result<deltalake::DeltaResult<DeltaTable>> {
    let table = match table_builder(ctx, url)?.and_then(|b| b.build()) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    // Loading a table that does not exist yet logs an error inside delta-rs; look first.
    if !is_table(ctx, url).await? {
        return Ok(Ok(table));
    }
    let mut table = table;
    Ok(table.load().await.map(|()| table))
}

/// A delta-rs table builder that reads and writes through the object store this session uses
/// for `url`, so Delta tables live wherever the run's other files can: the same credentials,
/// endpoint and `storage:` options, and no second copy of the cloud SDKs.
fn table_builder(
    ctx: &SessionContext,
    url: &Url,
) -> Result<deltalake::DeltaResult<DeltaTableBuilder>> {
    let store = storage::store_for(ctx, url)?;
    register_log_store(url.scheme());
    Ok(
        DeltaTableBuilder::from_url(url.clone())
            .map(|b| b.with_storage_backend(store, url.clone())),
    )
}

/// Registers delta-rs's default log store for an object store scheme it has no factory for
/// (segflow builds delta-rs without its per-cloud crates). The default log store commits a
/// version with a put-if-absent (`PutMode::Create`), which S3 (since 2024), MinIO, GCS and
/// Azure all do atomically: two writers racing for one version cannot both win. Stores that
/// lack conditional puts reject the write instead of corrupting the log.
fn register_log_store(scheme: &str) {
    use deltalake::logstore::{
        LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
        logstore_factories,
    };
    struct Default;
    impl LogStoreFactory for Default {
        fn with_options(
            &self,
            prefixed_store: ObjectStoreRef,
            root_store: ObjectStoreRef,
            location: &Url,
            options: &StorageConfig,
        ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
            Ok(default_logstore(
                prefixed_store,
                root_store,
                location,
                options,
            ))
        }
    }
    let Ok(key) = Url::parse(&format!("{scheme}://")) else {
        return;
    };
    let factories = logstore_factories();
    if !factories.contains_key(&key) {
        factories.insert(key, Arc::new(Default));
    }
}

/// Opens a published table for reading (tests, the summary, downstream tools), through the
/// session's store for `url`.
pub async fn open_table(ctx: &SessionContext, url: &Url) -> Result<DeltaTable> {
    open(ctx, url, None).await
}

/// Opens a published table at `version` (the one a run pointer names), for reading.
pub async fn open_table_at(ctx: &SessionContext, url: &Url, version: u64) -> Result<DeltaTable> {
    open(ctx, url, Some(version)).await
}

async fn open(ctx: &SessionContext, url: &Url, version: Option<u64>) -> Result<DeltaTable> {
    let fail = |source: deltalake::DeltaTableError| Error::Storage {
        location: url.to_string(),
        message: match version {
            Some(v) => format!("cannot open version {v} of the Delta table: {source}"),
            None => format!("cannot open the Delta table: {source}"),
        },
        source: None,
    };
    let mut table = table_builder(ctx, url)?
        .and_then(|b| b.build())
        .map_err(fail)?;
    // `DeltaTable::load` reads the latest version whatever the builder was told; a version
    // is loaded by `load_version`.
    match version {
        Some(v) => table.load_version(v as _).await.map_err(fail)?,
        None => table.load().await.map_err(fail)?,
    }
    Ok(table)
}
