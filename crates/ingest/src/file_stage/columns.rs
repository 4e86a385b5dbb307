//! Where each contract column is in a file: its header (CSV), schema (Parquet) or first
//! records' keys (NDJSON); and the pieces a large CSV file is cut into.

use std::sync::Arc;

use segflow_core::Result;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::stage::StageContext;
use segflow_core::storage::FileEntry;

use crate::source::{self, FileSource, Format};

use super::{ExtraColumns, FileIngest};

impl FileIngest {
    /// Reads a file's header (CSV), schema (Parquet) or first records' keys (NDJSON) and
    /// works out where each contract column is in it. An uncompressed CSV file of at least
    /// `datafusion.optimizer.repartition_file_min_size` bytes (10 MiB) is cut into pieces, one
    /// per target partition, so that all cores parse it.
    pub(super) async fn plan_file(
        &self,
        cx: &StageContext<'_>,
        store: &Arc<dyn object_store::ObjectStore>,
        file: &FileEntry,
    ) -> Result<FileSource> {
        let compression = match self.format {
            Format::Parquet => FileCompressionType::UNCOMPRESSED,
            _ => self.compression_of(&file.url),
        };
        let in_file = |m: String| self.bad_data(format!("{}: {m}", file.url));
        let header = match &self.format {
            Format::Csv(dialect) => {
                source::csv::read_header(store, &file.url, compression, dialect)
                    .await
                    .map_err(in_file)?
            }
            Format::Ndjson => source::ndjson::sample_keys(store, &file.url, compression)
                .await
                .map_err(in_file)?,
            Format::Parquet => {
                let columns = source::parquet::columns(store, &file.url, file.size)
                    .await
                    .map_err(in_file)?;
                for (c, from) in self.contract.columns.iter().zip(&self.headers) {
                    if let Some((_, t)) = columns.iter().find(|(n, _)| n == from)
                        && !source::parquet::readable(t)
                    {
                        return Err(in_file(format!(
                            "column `{from}` is {t}, which cannot be read as `{}` ({}); map `{}` to another column with `columns:`",
                            c.name, c.type_name, c.name
                        )));
                    }
                }
                columns.into_iter().map(|(n, _)| n).collect()
            }
        };
        let mut positions = Vec::new();
        let mut missing = Vec::new();
        for (c, from) in self.contract.columns.iter().zip(&self.headers) {
            let at = header.iter().position(|h| h == from);
            if at.is_none() {
                if c.nullable {
                    // NDJSON records may each have other keys; only the first were sampled.
                    if self.format.name() != "ndjson" {
                        cx.warn(&format!(
                            "{}: no column `{from}`; `{}` is null for its rows",
                            file.url, c.name
                        ));
                    }
                } else {
                    missing.push(from.as_str());
                }
            }
            positions.push(at);
        }
        let expected: Vec<&str> = self.headers.iter().map(String::as_str).collect();
        // NDJSON records each have their own keys: the reader reports (or, with
        // `extra_columns: fail`, stops at) keys beyond the contract's in every record.
        let extra: Vec<&str> = match self.format {
            Format::Ndjson => Vec::new(),
            _ => header
                .iter()
                .filter(|h| !expected.contains(&h.as_str()))
                .map(String::as_str)
                .collect(),
        };
        if !missing.is_empty() || (!extra.is_empty() && self.extra_columns == ExtraColumns::Fail) {
            return Err(self.bad_data(format!(
                "{}: the {} the contract {}: missing [{}], unexpected [{}]; expected columns: {}; found: {}\nrename the columns in the file, or map them with `columns:` in stage `{}`",
                file.url,
                match self.format {
                    Format::Csv(_) => "header does not match",
                    Format::Ndjson => "keys of its first records do not match",
                    Format::Parquet => "schema does not match",
                },
                self.contract.file.display(),
                missing.join(", "),
                extra.join(", "),
                expected.join(", "),
                header.join(", "),
                self.id,
            )));
        }
        if !extra.is_empty() {
            cx.warn(&format!(
                "{}: ignoring columns the contract does not have: {}",
                file.url,
                extra.join(", ")
            ));
        }
        let pieces = match &self.format {
            // As DataFusion does with its own file scans, and under the same two options.
            Format::Csv(dialect) if compression == FileCompressionType::UNCOMPRESSED => {
                let config = cx.ctx.copied_config();
                let options = &config.options().optimizer;
                let pieces = config.target_partitions() as u64;
                if options.repartition_file_scans
                    && file.size >= options.repartition_file_min_size as u64
                    && pieces > 1
                {
                    source::csv::split(store, &file.url, file.size, dialect, pieces)
                        .await
                        .map_err(in_file)?
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        Ok(FileSource {
            url: file.url.clone(),
            size: file.size,
            compression,
            names: self.headers.clone(),
            positions,
            header,
            pieces,
        })
    }
}
