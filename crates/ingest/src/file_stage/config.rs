//! The YAML of an `ingest.csv`, `ingest.ndjson` or `ingest.parquet` stage, and how a stage is
//! built from it.

use std::collections::BTreeMap;

use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageFactory};
use segflow_core::{Result, storage};
use serde::Deserialize;

use crate::contract::Contract;
use crate::incremental;
use crate::source::{Dialect, Format};
use crate::validate::Parse;

use super::FileIngest;

/// The YAML keys of an `ingest.csv`, `ingest.ndjson` or `ingest.parquet` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A file, a glob (`/drop/orders-*.csv.gz`) or a directory / prefix of files; a local
    /// path or an object store URL.
    pub path: String,
    /// The table's contract, relative to the pipeline file.
    pub contract: String,
    /// CSV: field separator, one ASCII character. Default `,`.
    #[serde(default)]
    pub delimiter: Option<char>,
    /// CSV: quote character. Default `"`.
    #[serde(default)]
    pub quote: Option<char>,
    /// CSV: line of the header row; lines before it are skipped. Default 1.
    #[serde(default)]
    pub header_line: Option<usize>,
    /// CSV and NDJSON: `auto` (from the file extension: .gz, .bz2, .xz, .zst), `none`, `gzip`,
    /// `bzip2`, `xz` or `zstd`.
    #[serde(default)]
    pub compression: Option<String>,
    /// Where contract columns come from when the export names them differently (a CSV header,
    /// an NDJSON key, a Parquet column), and the format of dates and timestamps that are not
    /// ISO 8601:
    /// `{ customer_id: CustomerID, order_ts: { from: InvoiceDate, format: "%m/%d/%Y %H:%M" } }`.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSource>,
    /// Columns in the file that the contract does not have: `ignore` (reported as a warning,
    /// the default) or `fail`.
    #[serde(default)]
    pub extra_columns: ExtraColumns,
    /// The run table bad rows go to. Default `<output>_quarantine`.
    #[serde(default)]
    pub quarantine: Option<String>,
    /// Fail the stage when more than this fraction of rows is bad. Default 0.05.
    #[serde(default = "five_percent")]
    pub max_bad_fraction: f64,
    /// Fail the stage when more than this many rows are bad. Default: no limit.
    #[serde(default)]
    pub max_bad_rows: Option<u64>,
    /// Load incrementally into this Delta table (a local path or URL): only files that are new
    /// or changed since the last run are read; their good rows are added to the table (with a
    /// `source_file` column) in one commit when the run passes, replacing a changed file's
    /// earlier rows. The output table is the whole staging table, old rows and new.
    #[serde(default)]
    pub staging: Option<String>,
    /// The day whose end is "now" for `max: now` in the contract (nothing dated in the
    /// future), e.g. to reload an old drop as of its delivery day. Default: the run's start.
    #[serde(default)]
    pub today: Option<String>,
    /// Columns computed from each row to partition the staging table by, Hive style, so later
    /// readers can skip partitions: `{ order_month: "to_char(order_ts, '%Y-%m')" }`.
    #[serde(default)]
    pub partition_by: BTreeMap<String, String>,
}

/// Where one contract column is read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ColumnSource {
    /// The header name in the file.
    Name(String),
    /// A header name and/or a format.
    Detailed {
        /// The header name in the file (default: the contract name).
        #[serde(default)]
        from: Option<String>,
        /// A chrono format for a date or timestamp column, e.g. `%d/%m/%Y %H:%M`.
        #[serde(default)]
        format: Option<String>,
    },
}

/// What to do with columns the contract does not name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraColumns {
    /// Leave them out of the table, with a warning naming them.
    #[default]
    Ignore,
    /// Fail the stage.
    Fail,
}

fn five_percent() -> f64 {
    0.05
}

/// Builds the `ingest.<format>` kinds.
pub(crate) struct IngestFactory(pub(crate) SourceFormat);

/// The formats an ingest stage reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceFormat {
    Csv,
    Ndjson,
    Parquet,
}

impl StageFactory for IngestFactory {
    fn kind(&self) -> &'static str {
        match self.0 {
            SourceFormat::Csv => "ingest.csv",
            SourceFormat::Ndjson => "ingest.ndjson",
            SourceFormat::Parquet => "ingest.parquet",
        }
    }

    fn summary(&self) -> &'static str {
        match self.0 {
            SourceFormat::Csv => {
                "reads CSV files into a typed table checked against a contract; bad rows go to quarantine"
            }
            SourceFormat::Ndjson => {
                "reads NDJSON files (a JSON object per line) into a typed table checked against a contract; bad rows go to quarantine"
            }
            SourceFormat::Parquet => {
                "reads Parquet files into a typed table checked against a contract; bad rows go to quarantine"
            }
        }
    }

    fn example_yaml(&self) -> &'static str {
        match self.0 {
            SourceFormat::Csv => CSV_EXAMPLE,
            SourceFormat::Ndjson => {
                r#"id: ingest_events
kind: ingest.ndjson
path: s3://crm-drop/events/
contract: contracts/events.yaml
output: events
columns:
  customer_id: user.id
  event_ts: { from: ts, format: "%Y-%m-%d %H:%M:%S" }
"#
            }
            SourceFormat::Parquet => {
                r#"id: ingest_customers
kind: ingest.parquet
path: /data/warehouse/customers/*.parquet
contract: contracts/customers.yaml
output: customers
columns:
  customer_id: CustomerID
extra_columns: fail
"#
            }
        }
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        build(self.0, spec, cx)
    }
}

const CSV_EXAMPLE: &str = r#"id: ingest_orders
kind: ingest.csv
path: /data/crm/orders-*.csv.gz
contract: contracts/orders.yaml
output: orders
quarantine: orders_quarantine
columns:
  order_ts: { from: InvoiceDate, format: "%m/%d/%Y %H:%M" }
max_bad_fraction: 0.01
"#;

fn build(format: SourceFormat, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
    let config: IngestConfig = spec.config(cx.source)?;
    let contract = Contract::load(&cx.relative_path(&config.contract))?;
    let url = storage::parse_location(&config.path).map_err(|e| spec.error(cx.source, e))?;
    let err = |m: String| spec.error(cx.source, m);
    let csv_keys = [
        ("delimiter", config.delimiter.is_some()),
        ("quote", config.quote.is_some()),
        ("header_line", config.header_line.is_some()),
    ];
    let format = match format {
        SourceFormat::Csv => {
            let delimiter = config.delimiter.unwrap_or(',');
            let quote = config.quote.unwrap_or('"');
            for (key, c) in [("delimiter", delimiter), ("quote", quote)] {
                if !c.is_ascii() {
                    return Err(err(format!("`{key}` must be one ASCII character")));
                }
            }
            let header_line = config.header_line.unwrap_or(1);
            if header_line == 0 {
                return Err(err("`header_line` counts from 1".into()));
            }
            Format::Csv(Dialect {
                delimiter: delimiter as u8,
                quote: quote as u8,
                header_line,
            })
        }
        other => {
            if let Some((key, _)) = csv_keys.iter().find(|(_, set)| *set) {
                return Err(err(format!(
                    "`{key}` is a CSV option; `{}` does not take it",
                    spec.kind
                )));
            }
            if other == SourceFormat::Parquet && config.compression.is_some() {
                return Err(err(
                    "`compression` is for CSV and NDJSON files; Parquet compresses inside the file"
                        .into(),
                ));
            }
            if other == SourceFormat::Ndjson {
                Format::Ndjson
            } else {
                Format::Parquet
            }
        }
    };
    let compression = match config.compression.as_deref().unwrap_or("auto") {
        "auto" => None,
        "none" => Some(FileCompressionType::UNCOMPRESSED),
        "gzip" => Some(FileCompressionType::GZIP),
        "bzip2" => Some(FileCompressionType::BZIP2),
        "xz" => Some(FileCompressionType::XZ),
        "zstd" => Some(FileCompressionType::ZSTD),
        other => {
            return Err(err(format!(
                "`compression: {other}` is not one of auto, none, gzip, bzip2, xz, zstd"
            )));
        }
    };
    if !(0.0..=1.0).contains(&config.max_bad_fraction) {
        return Err(err("`max_bad_fraction` must be between 0 and 1".into()));
    }
    for name in config.columns.keys() {
        if contract.column(name).is_none() {
            return Err(err(format!(
                "`columns` maps `{name}`, which is not a column of {}; its columns are: {}",
                contract.file.display(),
                contract
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let (mut headers, mut parses) = (Vec::new(), Vec::new());
    for c in &contract.columns {
        let (from, format) = match config.columns.get(&c.name) {
            None => (c.name.clone(), None),
            Some(ColumnSource::Name(n)) => (n.clone(), None),
            Some(ColumnSource::Detailed { from, format }) => (
                from.clone().unwrap_or_else(|| c.name.clone()),
                format.clone(),
            ),
        };
        if let Some(f) = &format {
            let date_only = match c.data_type {
                DataType::Date32 => true,
                DataType::Timestamp(..) => false,
                _ => {
                    return Err(err(format!(
                        "`columns.{}.format` applies to date and timestamp columns; `{}` is {}",
                        c.name, c.name, c.type_name
                    )));
                }
            };
            crate::formats::check_format(f, date_only)
                .map_err(|m| err(format!("`columns.{}.format`: {m}", c.name)))?;
        }
        headers.push(from);
        parses.push(Parse { format });
    }
    let Some(output) = spec.output.clone() else {
        return Err(err("has no `output`; name the table it produces".into()));
    };
    if !spec.inputs.is_empty() {
        return Err(err(
            "takes no `inputs`; it reads `path` (and the tables its contract references)".into(),
        ));
    }
    let quarantine = config
        .quarantine
        .unwrap_or_else(|| format!("{output}_quarantine"));
    let today = match config.today.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => {
            let day = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| err(format!("`today: {d}` is not a date (YYYY-MM-DD)")))?;
            // The whole day counts: its last second is "now".
            let end = day.and_hms_opt(23, 59, 59).expect("valid time");
            Some(end.and_utc())
        }
    };
    let staging = config
        .staging
        .as_deref()
        .map(storage::parse_location)
        .transpose()
        .map_err(|e| err(format!("`staging`: {e}")))?;
    if !config.partition_by.is_empty() && staging.is_none() {
        return Err(err(
            "`partition_by` partitions the `staging` table; set `staging` too".into(),
        ));
    }
    for name in config.partition_by.keys() {
        if contract.column(name).is_some() || name == incremental::SOURCE_FILE {
            return Err(err(format!(
                "`partition_by` column `{name}` is already a column; give the computed one another name"
            )));
        }
    }
    Ok(Box::new(FileIngest {
        id: spec.id.clone(),
        url,
        contract,
        format,
        compression,
        headers,
        parses,
        extra_columns: config.extra_columns,
        output,
        quarantine,
        max_bad_fraction: config.max_bad_fraction,
        max_bad_rows: config.max_bad_rows,
        staging,
        partition_by: config.partition_by.into_iter().collect(),
        today,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage =
            segflow_core::stage::check_example(&IngestFactory(SourceFormat::Csv), &root).unwrap();
        assert_eq!(stage.outputs(), ["orders", "orders_quarantine"]);
        assert_eq!(stage.inputs(), ["customers"]);
        for format in [SourceFormat::Ndjson, SourceFormat::Parquet] {
            segflow_core::stage::check_example(&IngestFactory(format), &root).unwrap();
        }
    }

    #[test]
    fn options_of_another_format_are_rejected_by_name() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let build = |format, yaml: &str| {
            segflow_core::stage::build_yaml(&IngestFactory(format), &root, yaml)
                .unwrap_err()
                .to_string()
        };
        let base = "id: t\npath: /in/\ncontract: contracts/orders.yaml\noutput: orders\n";
        let e = build(
            SourceFormat::Ndjson,
            &format!("{base}kind: ingest.ndjson\ndelimiter: \";\"\n"),
        );
        assert!(
            e.contains("`delimiter` is a CSV option; `ingest.ndjson` does not take it"),
            "{e}"
        );
        let e = build(
            SourceFormat::Parquet,
            &format!("{base}kind: ingest.parquet\ncompression: gzip\n"),
        );
        assert!(e.contains("Parquet compresses inside the file"), "{e}");
        let e = build(
            SourceFormat::Csv,
            &format!("{base}kind: ingest.csv\ncompression: lz4\n"),
        );
        assert!(e.contains("`compression: lz4` is not one of auto"), "{e}");
    }
}
