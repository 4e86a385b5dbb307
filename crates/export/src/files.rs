//! `export.files`: Parquet or CSV copies of published tables for consumers without a Delta
//! reader, one folder per table and as_of, finished by a `_SUCCESS` manifest.
//!
//! Layout: `<path>/<table>/as_of=<date>/part-00000.parquet ... _SUCCESS`. The files are
//! written under `<path>/<table>/_temporary/<run_id>/` first; only then is the as_of folder
//! emptied (its `_SUCCESS` first, so a sensor never sees a finished folder with missing
//! files), the files moved in, and `_SUCCESS` written last. `_SUCCESS` is JSON in the spirit of
//! Hadoop's manifest committer: the files with their rows, bytes and SHA-256, and where they
//! came from. A rerun of an as_of replaces its folder.

use async_trait::async_trait;
use object_store::ObjectStoreExt as _;
use segflow_core::datafusion::dataframe::DataFrameWriteOptions;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::{Error, storage};
use serde::Deserialize;
use url::Url;

use crate::folder::{self, FileEntry, Success};
use crate::published::Published;

/// The YAML keys of an `export.files` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The runs folder (a pipeline's `runs:`) whose published run is exported.
    pub runs: String,
    /// Where the exports go: `<path>/<table>/as_of=<date>/`.
    pub path: String,
    /// `parquet` (default) or `csv` (UTF-8, a header row, RFC 4180 quoting).
    #[serde(default)]
    pub format: Format,
    /// Published tables to export.
    pub tables: Vec<String>,
    /// The as_of folder to write; empty (default): the `as_of` of the published
    /// customer_segments (one day per snapshot).
    #[serde(default)]
    pub as_of: String,
}

/// The files' format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Parquet, as DataFusion writes it.
    #[default]
    Parquet,
    /// UTF-8 CSV with a header row.
    Csv,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

/// A built `export.files` stage.
#[derive(Debug)]
pub struct FilesExport {
    runs: Url,
    root: Url,
    format: Format,
    tables: Vec<String>,
    as_of: Option<chrono::NaiveDate>,
}

pub(crate) struct FilesExportFactory;

impl StageFactory for FilesExportFactory {
    fn kind(&self) -> &'static str {
        "export.files"
    }

    fn summary(&self) -> &'static str {
        "after publishing, copies published tables to Parquet or CSV files per as_of, finished by a _SUCCESS manifest"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: export_files
kind: export.files
runs: /tmp/segflow-example/_runs
path: /tmp/segflow-example/exports
format: csv
tables: [customer_segments, segment_profiles]
"#
    }

    fn build(
        &self,
        spec: &StageSpec,
        cx: &BuildContext<'_>,
    ) -> segflow_core::Result<Box<dyn Stage>> {
        let config: FilesConfig = spec.config(cx.source)?;
        crate::published::refuse_run_tables(
            spec,
            cx,
            "exports the published tables named in `tables`",
        )?;
        if config.tables.is_empty() {
            return Err(spec.error(
                cx.source,
                "has no `tables`; list the published tables to export",
            ));
        }
        let as_of = match config.as_of.trim() {
            "" => None,
            d => Some(
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| {
                    spec.error(
                        cx.source,
                        format!("`as_of: {d}` is not a YYYY-MM-DD date ({e})"),
                    )
                })?,
            ),
        };
        Ok(Box::new(FilesExport {
            runs: crate::published::folder_key(spec, cx, "runs", &config.runs)?,
            root: crate::published::folder_key(spec, cx, "path", &config.path)?,
            format: config.format,
            tables: config.tables,
            as_of,
        }))
    }
}

#[async_trait]
impl Stage for FilesExport {
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn after_publish(&self) -> bool {
        true
    }

    fn describe(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| {
                format!(
                    "{t} -> {} ({})",
                    storage::join(&self.root, &format!("{t}/as_of=.../")),
                    self.format.extension()
                )
            })
            .collect()
    }

    async fn fingerprint(
        &self,
        _ctx: &SessionContext,
        _run: &segflow_core::stage::RunInfo,
        _f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> segflow_core::Result<()> {
        // It reads the published run, after the run's own tables; it produces none.
        Ok(())
    }

    async fn run(&self, cx: &StageContext<'_>) -> segflow_core::Result<()> {
        let ctx = cx.ctx;
        let published = Published::read(ctx, &self.runs).await?;
        let as_of = match self.as_of {
            Some(d) => d,
            None => {
                let segments = published.table(ctx, "customer_segments").await?;
                crate::published::snapshot_day(cx, &segments.rows)
                    .await?
                    .ok_or_else(|| Error::BadData {
                        stage: cx.stage_id.to_string(),
                        message: "the published customer_segments has no rows, so no as_of; \
                                  set `as_of:` on the stage"
                            .into(),
                    })?
            }
        };
        for table in &self.tables {
            let success = self.export(cx, &published, table, as_of).await?;
            tracing::info!(
                table = %table,
                rows = success.rows,
                files = success.files.len(),
                "exported {}",
                success.filenames.first().map_or("", |f| f.rsplit_once('/').map_or(f, |x| x.0))
            );
            cx.metric(&format!("{table}_rows"), serde_json::json!(success.rows));
        }
        Ok(())
    }
}

impl FilesExport {
    async fn export(
        &self,
        cx: &StageContext<'_>,
        published: &Published,
        name: &str,
        as_of: chrono::NaiveDate,
    ) -> segflow_core::Result<Success> {
        let ctx = cx.ctx;
        let table = published.table(ctx, name).await?;
        let table_dir = storage::as_dir(&storage::join(&self.root, name));
        let temp = storage::as_dir(&storage::join(
            &table_dir,
            &format!("_temporary/{}", cx.run.run_id),
        ));
        let dest = storage::as_dir(&storage::join(&table_dir, &format!("as_of={as_of}")));
        let context = format!("writing {name} to {temp}");
        storage::delete_prefix(ctx, &temp).await?;
        let options = DataFrameWriteOptions::new();
        match self.format {
            Format::Parquet => {
                table
                    .rows
                    .clone()
                    .write_parquet(temp.as_str(), options, None)
                    .await
                    .map_err(cx.df_err(context.clone()))?;
            }
            Format::Csv => {
                let csv =
                    segflow_core::datafusion::config::CsvOptions::default().with_has_header(true);
                table
                    .rows
                    .clone()
                    .write_csv(temp.as_str(), options, Some(csv))
                    .await
                    .map_err(cx.df_err(context.clone()))?;
            }
        }
        // Name, rows, bytes and checksum of each file, read back as written.
        let store = storage::store_for(ctx, &temp)?;
        let mut written = storage::list_files(ctx, &temp).await?;
        written.sort_by(|a, b| a.url.as_str().cmp(b.url.as_str()));
        let mut files = Vec::new();
        for (i, f) in written.iter().enumerate() {
            let read_back = |e| folder::fail(&f.url, "cannot read back an export file", e);
            let got = store
                .get(&storage::store_path(&f.url)?)
                .await
                .map_err(read_back)?;
            let bytes = got.bytes().await.map_err(read_back)?;
            let rows = count_rows(self.format, &bytes).map_err(|m| Error::Storage {
                location: f.url.to_string(),
                message: m,
                source: None,
            })?;
            let name = format!("part-{i:05}.{}", self.format.extension());
            files.push((f.url.clone(), FileEntry::of(name, rows, &bytes)));
        }
        let success = Success::new(
            "segflow.export.files/1",
            &cx.run.run_id,
            &dest,
            name,
            as_of,
            self.format.extension(),
            &table,
            &files,
        );
        folder::commit(ctx, &dest, &files, &success).await?;
        storage::delete_prefix(ctx, &temp).await?;
        Ok(success)
    }
}

fn count_rows(format: Format, bytes: &bytes::Bytes) -> Result<u64, String> {
    match format {
        Format::Parquet => {
            use segflow_core::datafusion::parquet::file::reader::{
                FileReader as _, SerializedFileReader,
            };
            let reader = SerializedFileReader::new(bytes.clone())
                .map_err(|e| format!("not a readable Parquet file: {e}"))?;
            Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(&bytes[..]);
            let mut rows = 0;
            for record in reader.records() {
                record.map_err(|e| format!("not a readable CSV file: {e}"))?;
                rows += 1;
            }
            Ok(rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&FilesExportFactory, &root).unwrap();
        assert!(stage.after_publish());
        assert!(stage.describe()[0].contains("exports/customer_segments/as_of="));
    }

    #[test]
    fn csv_rows_are_records_not_lines() {
        let body = bytes::Bytes::from_static(b"a,b\n1,\"x\ny\"\n2,z\n");
        assert_eq!(count_rows(Format::Csv, &body), Ok(2));
        assert!(count_rows(Format::Parquet, &body).is_err());
    }
}
