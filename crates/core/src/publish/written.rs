//! Write once: a run table that the run will publish to a Delta table is written straight into
//! that table's location, as the data files of its next version, and the publish step commits
//! exactly those files. Nothing is copied or encoded a second time.
//!
//! ```text
//!  stage output ──> WrittenFiles: Parquet data files under <table url>/ (in a partitioned
//!       │           table, under <table url>/<column>=<value>/), one writer per partition of
//!       │           the stage's plan (all cores), each file with its Add action (row count,
//!       │           min/max/null counts from its footer, partition values); later stages of
//!       │           the run read the table from exactly these files
//!  run passes   ──> commit: one Delta commit of the Adds, and to overwrite, the Removes of the
//!                   current version's files; a table that does not exist yet is created by
//!                   that same commit (version 0)
//! ```
//!
//! The files are named by delta-rs's writer (`part-<n>-<uuid>-c000.snappy.parquet`), unique per
//! writer, so a retried or concurrent run never overwrites another's files. A run that fails or
//! is killed before its commit leaves its files in the table's directory outside any version:
//! Delta readers never see them, and `vacuum` deletes them.
//!
//! Only requests whose commit rewrites no published file qualify ([`writes_directly`]): an
//! append, or an overwrite of the whole table, partitioned or not. `replace_partitions` and a
//! `replaceWhere` over existing rows go through delta-rs's write, as does a commit that would
//! change the table's schema or its partition columns (delta-rs decides whether that is
//! allowed and how).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow as _, TryIntoKernel as _};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, StructType};
use deltalake::logstore::ObjectStoreRef;
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::TryStreamExt;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use url::Url;

use super::{PublishMode, PublishRequest};
use crate::error::{Error, Result};
use crate::manifest::PublishReport;
use crate::stage::RunInfo;

/// Whether `request` can be committed from files written straight into its table: its commit
/// adds files and removes whole files, never rewriting one.
pub fn writes_directly(request: &PublishRequest) -> bool {
    match request.mode {
        PublishMode::Append => true,
        PublishMode::Overwrite => request.replace_where.is_none(),
        PublishMode::ReplacePartitions => false,
    }
}

/// Step one: a run table written as data files of a Delta table, not committed yet.
#[derive(Debug, Clone)]
pub struct WrittenFiles {
    /// The Delta table the files were written into.
    pub url: Url,
    /// One Add action per file, its path relative to the table.
    pub adds: Vec<Add>,
    /// The table's partition columns, in order; their values are in each Add, not in the
    /// files.
    pub partition_by: Vec<String>,
    /// The files' schema: the run table's, as Delta stores it (view types as their plain
    /// forms, timestamps in microseconds).
    pub schema: SchemaRef,
}

impl WrittenFiles {
    /// The files, with their sizes and partition values, for reading the run table back.
    pub fn table_files(&self) -> Result<Vec<crate::files::TableFile>> {
        Ok(self
            .adds
            .iter()
            .zip(self.file_urls()?)
            .map(|(add, url)| crate::files::TableFile {
                url,
                size: add.size.max(0) as u64,
                partition_values: self
                    .partition_by
                    .iter()
                    .map(|c| add.partition_values.get(c).cloned().flatten())
                    .collect(),
            })
            .collect())
    }

    /// Each file's URL.
    pub fn file_urls(&self) -> Result<Vec<Url>> {
        let dir = crate::storage::as_dir(&self.url);
        self.adds
            .iter()
            .map(|a| {
                dir.join(&a.path).map_err(|e| {
                    Error::Internal(format!("data file `{}` of {}: {e}", a.path, self.url))
                })
            })
            .collect()
    }
}

/// Checks that the Delta table at `url` can take rows of `schema`, partitioned by
/// `partition_by`, written straight into it: its store can be set up, and the rows have the
/// partition columns. The schema its files will have.
pub(crate) fn check_sink(
    ctx: &SessionContext,
    url: &Url,
    schema: &SchemaRef,
    partition_by: &[String],
) -> Result<SchemaRef> {
    let fail = |e: String| Error::Storage {
        location: url.to_string(),
        message: format!("cannot write into the Delta table: {e}"),
        source: None,
    };
    super::table_builder(ctx, url)?
        .and_then(|b| b.build())
        .map_err(|e| fail(e.to_string()))?;
    if let Some(c) = partition_by
        .iter()
        .find(|c| schema.field_with_name(c).is_err())
    {
        return Err(fail(format!(
            "it is partitioned by `{c}`, which the rows lack"
        )));
    }
    delta_schema(schema).map_err(|e| fail(e.to_string()))
}

/// Parquet properties of a partitioned table's files: delta-rs's (Snappy), with dictionaries
/// that give up at 64 KiB instead of 1 MiB. A writer holds one file per partition value (dozens
/// of months, say), each of which reaches a 1 MiB dictionary for a column of unique values
/// (order ids) only near its end: every value of such a column was interned, in dozens of hash
/// tables. Columns of few values (categories, channels) stay dictionary-encoded.
fn partitioned_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_page_size_limit(64 * 1024)
        .build()
}

/// Rows a partitioned writer gathers before it hands them to delta-rs, which splits every
/// batch it is given by partition value and appends each piece to that partition's file. A
/// batch of a few thousand rows spread over dozens of months becomes pieces of a hundred rows,
/// each paying a sort, a copy and a Parquet write call; gathered, the pieces are a few
/// thousand rows each, for a few MB held per writer.
const PARTITIONED_WRITE_ROWS: usize = 128 * 1024;

/// Writes one partition's batches as Delta data files (Snappy, delta-rs's default properties,
/// rolled at its target file size).
pub(crate) struct FileWriter {
    /// The files' schema: Delta's form of the rows' ([`delta_schema`]).
    schema: SchemaRef,
    writer: DeltaWriter,
    /// Batches not yet written, for a partitioned table ([`PARTITIONED_WRITE_ROWS`]).
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    gather: bool,
}

impl FileWriter {
    /// A writer of one partition's rows into the Delta table whose root is `store`. In a
    /// partitioned table it splits its batches by the partition columns' values and writes
    /// one file (or more, at delta-rs's target size) per value it meets.
    pub(crate) fn new(store: ObjectStoreRef, schema: SchemaRef, partition_by: Vec<String>) -> Self {
        let partitioned = !partition_by.is_empty();
        let config = WriterConfig::new(
            schema.clone(),
            partition_by,
            partitioned.then(partitioned_properties),
            None,
            None,
            // delta-rs's default: statistics for the first 32 columns.
            DataSkippingNumIndexedCols::NumColumns(32),
            None,
        );
        FileWriter {
            schema,
            writer: DeltaWriter::new(store, config),
            pending: Vec::new(),
            pending_rows: 0,
            gather: partitioned,
        }
    }

    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> deltalake::DeltaResult<()> {
        let batch = conform(batch, &self.schema)?;
        if !self.gather {
            return self.writer.write(&batch).await;
        }
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows >= PARTITIONED_WRITE_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> deltalake::DeltaResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = arrow::compute::concat_batches(&self.schema, &self.pending)?;
        self.pending.clear();
        self.pending_rows = 0;
        self.writer.write(&batch).await
    }

    /// Finishes the files; their Add actions.
    pub(crate) async fn close(mut self) -> deltalake::DeltaResult<Vec<Add>> {
        self.flush().await?;
        self.writer.close().await
    }
}

/// The Arrow schema Delta stores `schema` as: through the Delta schema and back, so the files
/// hold exactly what a Delta reader expects.
pub(crate) fn delta_schema(schema: &SchemaRef) -> deltalake::DeltaResult<SchemaRef> {
    let kernel: StructType = schema.as_ref().try_into_kernel()?;
    let arrow: Schema = (&kernel).try_into_arrow()?;
    Ok(Arc::new(arrow))
}

/// `batch` with `schema`'s types (a view type cast to its plain form, say).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> deltalake::DeltaResult<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Step two: commits the files of `written` as the next version of `request`'s table. `None`
/// when the table's current schema differs from the files': then delta-rs's write decides.
pub(crate) async fn commit(
    ctx: &SessionContext,
    request: &PublishRequest,
    written: &WrittenFiles,
    run: &RunInfo,
    rows: u64,
) -> Result<Option<PublishReport>> {
    let fail = |source: deltalake::DeltaTableError| Error::Publish {
        table: request.display_name().to_string(),
        url: request.url.to_string(),
        source: Box::new(source),
    };
    let table = super::open_or_new(ctx, &request.url).await?.map_err(fail)?;
    let before = table.version();
    if let Some(report) = super::unchanged(request, before, rows) {
        return Ok(Some(report));
    }
    let schema: StructType = written
        .schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| fail(e.into()))?;
    let txn = super::reconcile::transaction(run, &request.table);
    let properties = super::reconcile::properties(request, run, &txn);
    let adds = written.adds.iter().cloned().map(Action::Add);
    let committed = match before {
        None => {
            let created = CreateBuilder::new()
                .with_log_store(table.log_store())
                .with_columns(schema.fields().cloned())
                .with_partition_columns(written.partition_by.clone())
                .with_table_name(request.display_name().to_string())
                .with_actions(adds)
                .with_commit_properties(properties)
                .await;
            created.map(|t| t.version())
        }
        Some(_) => {
            let snapshot = table.snapshot().map_err(fail)?;
            if *snapshot.schema() != schema
                || snapshot.metadata().partition_columns() != written.partition_by.as_slice()
            {
                return Ok(None);
            }
            let mut actions: Vec<Action> = match request.mode {
                PublishMode::Overwrite => table
                    .get_active_add_actions_by_partitions(&[])
                    .map_ok(|f| Action::Remove(f.remove_action(true)))
                    .try_collect()
                    .await
                    .map_err(fail)?,
                _ => Vec::new(),
            };
            actions.extend(adds);
            let operation = DeltaOperation::Write {
                mode: match request.mode {
                    PublishMode::Append => SaveMode::Append,
                    _ => SaveMode::Overwrite,
                },
                partition_by: (!written.partition_by.is_empty())
                    .then(|| written.partition_by.clone()),
                predicate: None,
            };
            CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map(|c| Some(c.version()))
        }
    };
    let version = match committed {
        Ok(v) => v,
        Err(e) => match super::reconcile::landed(ctx, &request.url, before, &txn.app_id).await? {
            Some(v) => {
                tracing::warn!(table = %request.url, version = v,
                    "the commit's answer was lost; the Delta log shows it landed");
                Some(v)
            }
            None => return Err(fail(e)),
        },
    };
    let version = version.ok_or_else(|| {
        Error::Internal(format!(
            "Delta table {} has no version after a commit",
            request.url
        ))
    })?;
    Ok(Some(PublishReport {
        table: request.display_name().to_string(),
        url: request.url.to_string(),
        previous_version: before,
        version,
        rows,
    }))
}
