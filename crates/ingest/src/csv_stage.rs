//! `ingest.csv`: one CSV file to a typed run table, checked against its contract.

use std::path::PathBuf;

use async_trait::async_trait;
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
use segflow_core::datafusion::logical_expr::{Expr, cast, ident};
use segflow_core::datafusion::prelude::CsvReadOptions;
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::{Error, Result, checks, storage};
use serde::Deserialize;
use url::Url;

use crate::contract::Contract;
use crate::diagnose;

/// The YAML keys of an `ingest.csv` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvIngestConfig {
    /// The CSV file: a local path or an object store URL.
    pub path: String,
    /// The table's contract, relative to the pipeline file.
    pub contract: String,
    /// Field separator, one character. Default `,`.
    #[serde(default = "comma")]
    pub delimiter: char,
    /// Whether quoted values may contain line breaks. Off by default, which lets DataFusion
    /// split one file across cores; turn it on for exports that have multi-line text.
    #[serde(default)]
    pub newlines_in_values: bool,
}

fn comma() -> char {
    ','
}

/// A built `ingest.csv` stage.
#[derive(Debug)]
pub struct CsvIngest {
    id: String,
    url: Url,
    contract: Contract,
    delimiter: u8,
    newlines_in_values: bool,
    output: String,
}

pub(crate) struct CsvIngestFactory;

impl StageFactory for CsvIngestFactory {
    fn kind(&self) -> &'static str {
        "ingest.csv"
    }

    fn summary(&self) -> &'static str {
        "reads a CSV file (header row, RFC 4180) into a typed table checked against a contract"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: ingest_orders
kind: ingest.csv
path: /data/crm/orders.csv
contract: contracts/orders.yaml
output: orders
"#
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        let config: CsvIngestConfig = spec.config(cx.source)?;
        let contract = Contract::load(&cx.relative_path(&config.contract))?;
        let url = storage::parse_location(&config.path).map_err(|e| spec.error(cx.source, e))?;
        if !config.delimiter.is_ascii() {
            return Err(spec.error(cx.source, "`delimiter` must be one ASCII character"));
        }
        let Some(output) = spec.output.clone() else {
            return Err(spec.error(cx.source, "has no `output`; name the table it produces"));
        };
        if !spec.inputs.is_empty() {
            return Err(spec.error(cx.source, "takes no `inputs`; it reads `path`"));
        }
        Ok(Box::new(CsvIngest {
            id: spec.id.clone(),
            url,
            contract,
            delimiter: config.delimiter as u8,
            newlines_in_values: config.newlines_in_values,
            output,
        }))
    }
}

impl CsvIngest {
    fn bad_data(&self, message: String) -> Error {
        Error::BadData {
            stage: self.id.clone(),
            message,
        }
    }

    fn contract_file(&self) -> PathBuf {
        self.contract.file.clone()
    }
}

#[async_trait]
impl Stage for CsvIngest {
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn describe(&self) -> Vec<String> {
        vec![
            format!("path: {}", self.url),
            format!("contract: {}", self.contract.file.display()),
        ]
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        if !storage::exists(cx.ctx, &self.url).await? {
            return Err(Error::InputNotFound {
                stage: self.id.clone(),
                url: self.url.to_string(),
            });
        }
        let header = diagnose::read_header(cx.ctx, &self.url, self.delimiter)
            .await?
            .map_err(|m| self.bad_data(m))?;
        let missing: Vec<&str> = self
            .contract
            .columns
            .iter()
            .filter(|c| !header.contains(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        let extra: Vec<&str> = header
            .iter()
            .filter(|h| self.contract.column(h).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(self.bad_data(format!(
                "{}: the header does not match the contract {}: missing [{}], unexpected [{}]; expected columns: {}; found: {}",
                self.url,
                self.contract_file().display(),
                missing.join(", "),
                extra.join(", "),
                self.contract.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                header.join(", "),
            )));
        }

        // Read every column as text, then cast to the contract in one projection: a value that
        // does not parse fails the cast instead of being turned into a null.
        let raw_schema = Schema::new(
            header
                .iter()
                .map(|h| Field::new(h, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        );
        let options = CsvReadOptions::new()
            .schema(&raw_schema)
            .has_header(true)
            .delimiter(self.delimiter)
            .newlines_in_values(self.newlines_in_values)
            .file_extension("");
        let df = cx
            .ctx
            .read_csv(self.url.as_str(), options)
            .await
            .map_err(cx.df_err(format!("reading {}", self.url)))?;
        let typed: Vec<Expr> = self
            .contract
            .columns
            .iter()
            .map(|c| match c.data_type {
                DataType::Utf8 => ident(&c.name),
                ref t => cast(ident(&c.name), t.clone()).alias(&c.name),
            })
            .collect();
        let df = df.select(typed).map_err(cx.df_err("typing columns"))?;
        if let Err(e) = cx.materialize(&self.output, df).await {
            // Locate the offending cells before reporting: a cast error alone does not say where.
            let found = diagnose::find_bad_values(
                cx.ctx,
                &self.url,
                self.delimiter,
                &header,
                &self.contract,
            )
            .await;
            return Err(match found {
                Ok(Some(report)) => self.bad_data(format!(
                    "{report}\nfix these values in the file, or the column types in {}",
                    self.contract_file().display()
                )),
                Ok(None) | Err(_) => e,
            });
        }
        checks::run_checks(cx, &self.output, &self.contract.checks())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&CsvIngestFactory, &root).unwrap();
        assert_eq!(stage.outputs(), ["orders"]);
    }
}
