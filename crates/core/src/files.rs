//! Exactly these Parquet files as one table: what a run table and a published Delta table
//! version are made of.
//!
//! A listing of a table's directory would also find files that are not part of it (a Delta
//! table's other versions, a failed task's attempt), so a table is always a list of files.
//! Unpartitioned files are a `ListingTable` over their URLs. Files of a partitioned Delta table
//! hold every column but the partition columns, whose values Delta keeps per file as text:
//! they are a [`PartitionedFiles`] table, one Parquet scan whose files carry their partition
//! values. Both plan to DataFusion's own Parquet scan, which a distributed engine sends to its
//! executors as it is and hands each task the files of its partitions.

use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use url::Url;

/// One file of a table, with its size and (in a partitioned table) its partition values as
/// text, in the order of the table's partition columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFile {
    pub url: Url,
    pub size: u64,
    pub partition_values: Vec<Option<String>>,
}

/// `files` as one table of `schema`; partitioned by `partition_by` (columns of `schema`,
/// whose values each file carries), or not. No files is an empty table.
pub fn files_table(
    schema: &SchemaRef,
    partition_by: &[String],
    files: Vec<TableFile>,
) -> Result<Arc<dyn TableProvider>> {
    if files.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?));
    }
    if partition_by.is_empty() {
        let urls = files
            .iter()
            .map(|f| ListingTableUrl::parse(f.url.as_str()))
            .collect::<Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema.clone());
        return Ok(Arc::new(ListingTable::try_new(config)?));
    }
    Ok(Arc::new(PartitionedFiles::try_new(
        schema.clone(),
        partition_by.to_vec(),
        files,
    )?))
}

/// Parquet files of a partitioned table, each with its partition values: one scan.
#[derive(Debug, Clone)]
pub struct PartitionedFiles {
    /// The table's columns, in its order.
    schema: SchemaRef,
    partition_by: Vec<String>,
    files: Vec<TableFile>,
    /// For each column of `schema`, its index in the scan's columns (the files' columns,
    /// then the partition columns).
    scan_index: Vec<usize>,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    partition_by: Vec<String>,
    files: Vec<TableFile>,
}

impl PartitionedFiles {
    pub fn try_new(
        schema: SchemaRef,
        partition_by: Vec<String>,
        files: Vec<TableFile>,
    ) -> Result<Self> {
        let partition_fields = partition_by
            .iter()
            .map(|c| Ok(Arc::new(schema.field_with_name(c)?.clone())))
            .collect::<Result<Vec<FieldRef>>>()?;
        let file_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !partition_by.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let scan_index = schema
            .fields()
            .iter()
            .map(|f| match partition_by.iter().position(|c| c == f.name()) {
                Some(p) => Ok(file_schema.fields().len() + p),
                None => file_schema.index_of(f.name()).map_err(Into::into),
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(f) = files
            .iter()
            .find(|f| f.partition_values.len() != partition_by.len())
        {
            return Err(DataFusionError::Internal(format!(
                "file {} has {} partition values for the {} partition columns",
                f.url,
                f.partition_values.len(),
                partition_by.len()
            )));
        }
        Ok(PartitionedFiles {
            schema,
            partition_by,
            files,
            scan_index,
            file_schema,
            partition_fields,
        })
    }

    /// The table as bytes, for a distributed engine's codec; the schema travels beside them.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&Wire {
            partition_by: self.partition_by.clone(),
            files: self.files.clone(),
        })
        .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// The table [`PartitionedFiles::encode`] wrote, of `schema`.
    pub fn decode(bytes: &[u8], schema: SchemaRef) -> Result<Self> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| DataFusionError::External(Box::new(e)))?;
        Self::try_new(schema, wire.partition_by, wire.files)
    }

    /// A file's partition values, typed as their columns (Delta keeps them as text).
    fn values(&self, file: &TableFile) -> Result<Vec<ScalarValue>> {
        file.partition_values
            .iter()
            .zip(&self.partition_fields)
            .map(|(v, f)| ScalarValue::Utf8(v.clone()).cast_to(f.data_type()))
            .collect()
    }
}

#[async_trait]
impl TableProvider for PartitionedFiles {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The files of one table are in one store.
        let store = crate::storage::store_key(&self.files[0].url);
        // As many groups as the session has partitions, the largest files spread first.
        let groups = state
            .config()
            .target_partitions()
            .max(1)
            .min(self.files.len());
        let mut order: Vec<&TableFile> = self.files.iter().collect();
        order.sort_by(|a, b| {
            b.size
                .cmp(&a.size)
                .then_with(|| a.url.as_str().cmp(b.url.as_str()))
        });
        let mut files: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (i, f) in order.into_iter().enumerate() {
            let path = object_store::path::Path::from_url_path(f.url.path())
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            files[i % groups].push(
                PartitionedFile::new(path.to_string(), f.size)
                    .with_partition_values(self.values(f)?),
            );
        }
        let source = ParquetSource::new(
            TableSchema::builder(self.file_schema.clone())
                .with_table_partition_cols(self.partition_fields.clone())
                .build(),
        );
        // Columns in the table's order (or the projection's), from the scan's order.
        let columns: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| self.scan_index[i]).collect(),
            None => self.scan_index.clone(),
        };
        let config = FileScanConfigBuilder::new(store, Arc::new(source))
            .with_file_groups(files.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(Some(columns))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field};
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn partitioned_files_read_with_their_values_in_the_tables_column_order() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        // Two files of one column each; the table is (day date, n bigint), partitioned by day.
        let file_schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let mut files = Vec::new();
        for (i, day) in [(1, Some("2026-01-01")), (2, None)] {
            let path = dir.path().join(format!("f{i}.parquet"));
            let batch = RecordBatch::try_new(
                file_schema.clone(),
                vec![Arc::new(Int64Array::from(vec![i, i * 10]))],
            )
            .unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(&path).unwrap(),
                file_schema.clone(),
                None,
            )
            .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            files.push(TableFile {
                url: Url::from_file_path(&path).unwrap(),
                size: std::fs::metadata(&path).unwrap().len(),
                partition_values: vec![day.map(String::from)],
            });
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Date32, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let table = files_table(&schema, &["day".into()], files).unwrap();
        let bytes = table
            .downcast_ref::<PartitionedFiles>()
            .unwrap()
            .encode()
            .unwrap();
        let decoded = PartitionedFiles::decode(&bytes, schema.clone()).unwrap();
        for t in [table, Arc::new(decoded) as Arc<dyn TableProvider>] {
            let batches = ctx
                .read_table(t)
                .unwrap()
                .sort(vec![datafusion::prelude::col("n").sort(true, false)])
                .unwrap()
                .collect()
                .await
                .unwrap();
            let rows = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            let expected = "+------------+----+\n| day        | n  |\n+------------+----+\n\
                            | 2026-01-01 | 1  |\n|            | 2  |\n| 2026-01-01 | 10 |\n\
                            |            | 20 |\n+------------+----+";
            assert_eq!(rows, expected);
        }
    }
}
