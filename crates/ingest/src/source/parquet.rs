//! A Parquet source with the same raw columns as the CSV reader, so a Parquet export goes
//! through the same contract checks and quarantine.
//!
//! Only the columns the contract maps are read (a projection). Each is cast to text with
//! Arrow's cast kernel, a whole batch at a time; typing then parses that text, so a Parquet
//! file whose `amount` is a string column with `"n/a"` in it quarantines that row as
//! `bad_number` exactly as a CSV would. `_line_number` is the row's 1-based position in the
//! file, and `_raw_record` the row's mapped values as a JSON object.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use segflow_core::datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use segflow_core::datafusion::arrow::compute::{can_cast_types, cast};
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::datasource::listing::PartitionedFile;
use segflow_core::datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::parquet::arrow::ProjectionMask;
use segflow_core::datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use segflow_core::datafusion::parquet::arrow::async_reader::{
    AsyncFileReader, ParquetRecordBatchStreamBuilder,
};
use segflow_core::datafusion::parquet::errors::Result as ParquetResult;
use segflow_core::datafusion::parquet::file::metadata::ParquetMetaData;
use segflow_core::datafusion::physical_plan::SendableRecordBatchStream;
use segflow_core::datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use segflow_core::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use url::Url;

use super::rows::{Problem, Raw, RowBuffer};
use super::{BATCH_ROWS, FileSource, FormatReader, Reading};
use crate::row_checks::RowChecks;

/// The Parquet reader: one partition per file.
#[derive(Debug)]
pub(crate) struct ParquetReader;

impl FormatReader for ParquetReader {
    fn read(
        &self,
        file: &FileSource,
        _part: usize,
        reading: &Reading,
    ) -> SendableRecordBatchStream {
        let (checks, store, file) = (reading.checks.clone(), reading.store.clone(), file.clone());
        let schema = checks.schema().clone();
        let stream = futures::stream::once(open(checks, store, file)).try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// DataFusion's reader of a Parquet file in an object store (ranged reads, footer hint),
/// as an owned type the Parquet stream builder can hold across threads.
struct FileReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, ParquetResult<bytes::Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, ParquetResult<Vec<bytes::Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}

fn reader(store: Arc<dyn ObjectStore>, url: &Url, size: u64) -> DfResult<FileReader> {
    let path = segflow_core::storage::store_path(url)
        .map_err(|e| DataFusionError::External(e.to_string().into()))?;
    let file = PartitionedFile::new_from_meta(object_store::ObjectMeta {
        location: path,
        last_modified: chrono::DateTime::UNIX_EPOCH,
        size,
        e_tag: None,
        version: None,
    });
    let reader = DefaultParquetFileReaderFactory::new(store).create_reader(
        0,
        file,
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    Ok(FileReader(reader))
}

fn in_file(url: &Url, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(format!("{url}: {e}").into())
}

/// The file's top-level columns and their types, from its footer.
pub async fn columns(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    size: u64,
) -> Result<Vec<(String, DataType)>, String> {
    let reader = reader(store.clone(), url, size).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| format!("is not a readable Parquet file: {e}"))?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect())
}

/// Whether values of this Parquet column can be read as text for typing.
pub fn readable(t: &DataType) -> bool {
    can_cast_types(t, &DataType::Utf8)
}

async fn open(
    checks: Arc<RowChecks>,
    store: Arc<dyn ObjectStore>,
    file: FileSource,
) -> DfResult<impl futures::Stream<Item = DfResult<RecordBatch>>> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader(store, &file.url, file.size)?)
        .await
        .map_err(|e| in_file(&file.url, e))?;
    let roots: BTreeSet<usize> = file.positions.iter().flatten().copied().collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let batches = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| in_file(&file.url, e))?;
    let mut next_line = 1u64;
    Ok(batches.map(move |batch| {
        let batch = batch.map_err(|e| in_file(&file.url, e))?;
        let out = to_rows(&checks, &file, &batch, next_line)?;
        next_line += batch.num_rows() as u64;
        Ok(out)
    }))
}

/// One Parquet batch as checked rows: its values as text, typed and checked as a text
/// file's are, so that a Parquet export follows the same contract the same way.
fn to_rows(
    checks: &Arc<RowChecks>,
    file: &FileSource,
    batch: &RecordBatch,
    first_line: u64,
) -> DfResult<RecordBatch> {
    // Per target column: the file's name for it and its values as text.
    let mut read: Vec<Option<(&str, ArrayRef, ArrayRef)>> = Vec::new();
    for p in &file.positions {
        read.push(match p {
            None => None,
            Some(p) => {
                let name = file.header[*p].as_str();
                let source = batch
                    .column_by_name(name)
                    .ok_or_else(|| in_file(&file.url, format!("column `{name}` was not read")))?;
                let text = cast(source, &DataType::Utf8).map_err(|e| in_file(&file.url, e))?;
                Some((name, source.clone(), text))
            }
        });
    }
    let mut rows = RowBuffer::new(checks, &file.url);
    let mut values: Vec<Option<&str>> = Vec::with_capacity(read.len());
    let mut raw = String::new();
    for row in 0..batch.num_rows() {
        values.clear();
        raw.clear();
        raw.push('{');
        let mut problem = None;
        for (i, r) in read.iter().enumerate() {
            let Some((name, source, text)) = r else {
                values.push(None);
                continue;
            };
            let text = text.as_string::<i32>();
            let value = text.is_valid(row).then(|| text.value(row));
            if value.is_none() && source.is_valid(row) && problem.is_none() {
                // Arrow's cast gives null for bytes that are not UTF-8.
                problem = Some(Problem {
                    code: "invalid_utf8",
                    column: Some(rows.column_name(i).to_string()),
                    message: "is not valid UTF-8".into(),
                });
            }
            if raw.len() > 1 {
                raw.push(',');
            }
            raw.push_str(&serde_json::to_string(name).expect("a string serializes"));
            raw.push(':');
            match value {
                Some(v) => raw.push_str(&serde_json::to_string(v).expect("a string serializes")),
                None => raw.push_str("null"),
            }
            values.push(value);
        }
        raw.push('}');
        let line = first_line + row as u64;
        match problem {
            Some(p) => rows.push_problem(line, &raw, None, p),
            None => rows.push(line, Raw::Text(&raw), &values),
        }
    }
    Ok(rows
        .take()?
        .unwrap_or_else(|| RecordBatch::new_empty(checks.schema().clone())))
}
