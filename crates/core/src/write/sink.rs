//! One partition's writer of one target: Parquet files of a run table, or data files of a
//! Delta table.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::prefix::PrefixStore;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use url::Url;

use super::{SinkSpec, WrittenFile, worker};
use crate::publish::{FileWriter, delta_schema};

/// Writes one partition's rows of one target.
pub(super) enum PartWriter {
    RunTable(Box<RunTableFile>),
    Delta { writer: Box<FileWriter>, table: Url },
}

/// A run table's file of one partition, opened at its first row: a partition without rows
/// leaves no file.
pub(super) struct RunTableFile {
    store: Arc<dyn ObjectStore>,
    url: Url,
    schema: SchemaRef,
    props: WriterProperties,
    writer: Option<AsyncArrowWriter<BufWriter>>,
    rows: u64,
}

impl PartWriter {
    /// The writer of partition `partition`'s rows (of `schema`) for `sink`, in the task's
    /// object stores; `attempt` makes its file names unique to this execution.
    pub(super) fn new(
        sink: &SinkSpec,
        schema: SchemaRef,
        partition: usize,
        attempt: u64,
        context: &TaskContext,
    ) -> Result<Self> {
        Ok(match sink {
            SinkSpec::RunTable { dir } => {
                let url = crate::storage::join(
                    dir,
                    &format!("part-{partition:05}-{attempt:016x}.parquet"),
                );
                PartWriter::RunTable(Box::new(RunTableFile {
                    store: context
                        .runtime_env()
                        .object_store_registry
                        .get_store(&url)?,
                    props: run_table_properties(dir, &schema),
                    url,
                    schema,
                    writer: None,
                    rows: 0,
                }))
            }
            SinkSpec::Delta {
                table,
                partition_by,
            } => {
                let root = context
                    .runtime_env()
                    .object_store_registry
                    .get_store(table)?;
                let prefix = crate::storage::store_path(table)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(root, prefix));
                let schema = delta_schema(&schema)?;
                PartWriter::Delta {
                    writer: Box::new(FileWriter::new(store, schema, partition_by.clone())),
                    table: table.clone(),
                }
            }
        })
    }

    pub(super) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            PartWriter::RunTable(f) => {
                if f.writer.is_none() {
                    let path = crate::storage::store_path(&f.url)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    f.writer = Some(AsyncArrowWriter::try_new(
                        BufWriter::new(f.store.clone(), path),
                        f.schema.clone(),
                        Some(f.props.clone()),
                    )?);
                }
                f.rows += batch.num_rows() as u64;
                let writer = f.writer.as_mut().expect("opened above");
                Ok(writer.write(batch).await?)
            }
            PartWriter::Delta { writer, .. } => writer.write(batch).await.map_err(delta_error),
        }
    }

    /// Finishes the files; what each holds.
    pub(super) async fn close(self) -> Result<Vec<WrittenFile>> {
        match self {
            PartWriter::RunTable(f) => {
                let f = *f;
                let Some(mut writer) = f.writer else {
                    return Ok(Vec::new());
                };
                writer.finish().await?;
                let bytes = writer.bytes_written() as u64;
                Ok(vec![WrittenFile {
                    url: f.url,
                    rows: f.rows,
                    bytes,
                    add: None,
                    worker: worker().to_string(),
                }])
            }
            PartWriter::Delta { writer, table, .. } => {
                let adds = writer.close().await.map_err(delta_error)?;
                let dir = crate::storage::as_dir(&table);
                adds.into_iter()
                    .map(|add| {
                        let url = dir.join(&add.path).map_err(|e| {
                            DataFusionError::Internal(format!(
                                "data file `{}` of {table}: {e}",
                                add.path
                            ))
                        })?;
                        let rows = add
                            .get_stats()
                            .ok()
                            .flatten()
                            .map_or(0, |s| s.num_records.max(0) as u64);
                        Ok(WrittenFile {
                            url,
                            rows,
                            bytes: add.size.max(0) as u64,
                            add: Some(add),
                            worker: worker().to_string(),
                        })
                    })
                    .collect()
            }
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
pub(crate) fn run_table_properties(dir: &Url, schema: &Schema) -> WriterProperties {
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
