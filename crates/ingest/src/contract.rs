//! Table contracts: what an input table must look like.
//!
//! ```yaml
//! table: customers
//! description: One row per customer, as exported by the CRM.
//! unique: [customer_id]
//! columns:
//!   - { name: customer_id, type: string, nullable: false }
//!   - { name: gender, type: string, accepted_values: [F, M, X] }
//! ```

use std::path::{Path, PathBuf};

use segflow_core::datafusion::arrow::datatypes::{DataType, TimeUnit};
use segflow_core::spec::CheckSpec;
use segflow_core::{Error, Result, yaml};
use serde::Deserialize;

/// A table's contract, read from YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Table name (documentation; the stage's `output` names the run table).
    pub table: String,
    /// What one row is.
    #[serde(default)]
    pub description: Option<String>,
    /// Columns that together identify a row: no two rows may share them.
    #[serde(default)]
    pub unique: Vec<String>,
    /// The columns, in the order the table will have them.
    pub columns: Vec<Column>,
    /// Where the contract was read from (set on load).
    #[serde(skip)]
    pub file: PathBuf,
}

/// One column of a contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name, as in the file's header.
    pub name: String,
    /// `string`, `int`, `bigint`, `double`, `boolean`, `date` (YYYY-MM-DD), `timestamp`
    /// (ISO 8601; stored as UTC microseconds) or `decimal(p,s)`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether the value may be empty. Default true.
    #[serde(default = "yes")]
    pub nullable: bool,
    /// If set, every non-empty value must be one of these.
    #[serde(default)]
    pub accepted_values: Option<Vec<String>>,
    /// What the column means.
    #[serde(default)]
    pub description: Option<String>,
    /// The Arrow type, resolved from `type_name` on load.
    #[serde(skip, default = "utf8")]
    pub data_type: DataType,
}

fn yes() -> bool {
    true
}

fn utf8() -> DataType {
    DataType::Utf8
}

impl Contract {
    /// Reads and checks a contract file.
    pub fn load(path: &Path) -> Result<Contract> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c: Contract = yaml::from_str(path, &text)?;
        c.file = path.to_path_buf();
        let invalid = |message: String| Error::Invalid {
            file: path.to_path_buf(),
            message,
        };
        if c.columns.is_empty() {
            return Err(invalid("has no `columns`".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for col in &mut c.columns {
            if !seen.insert(col.name.clone()) {
                return Err(invalid(format!("column `{}` is listed twice", col.name)));
            }
            col.data_type = parse_type(&col.type_name).ok_or_else(|| {
                invalid(format!(
                    "column `{}`: unknown type `{}`; use string, int, bigint, double, boolean, date, timestamp or decimal(p,s)",
                    col.name, col.type_name
                ))
            })?;
        }
        for k in &c.unique {
            if !seen.contains(k) {
                return Err(invalid(format!(
                    "`unique` names `{k}`, which is not a column"
                )));
            }
        }
        Ok(c)
    }

    /// The data tests this contract implies, run on the typed table.
    pub fn checks(&self) -> Vec<CheckSpec> {
        let mut checks = Vec::new();
        let required: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !c.nullable)
            .map(|c| c.name.clone())
            .collect();
        if !required.is_empty() {
            checks.push(CheckSpec::NotNull(required));
        }
        if !self.unique.is_empty() {
            checks.push(CheckSpec::Unique(self.unique.clone()));
        }
        for c in &self.columns {
            if let Some(values) = &c.accepted_values {
                checks.push(CheckSpec::AcceptedValues {
                    column: c.name.clone(),
                    values: values.clone(),
                });
            }
        }
        checks
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Contract type names to Arrow types. Timestamps are UTC microseconds: the precision Delta
/// Lake stores, so published tables need no conversion.
pub fn parse_type(name: &str) -> Option<DataType> {
    let n = name.trim().to_ascii_lowercase();
    Some(match n.as_str() {
        "string" | "text" => DataType::Utf8,
        "int" | "integer" => DataType::Int32,
        "bigint" | "long" => DataType::Int64,
        "double" | "float" => DataType::Float64,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => {
            let inner = n.strip_prefix("decimal(")?.strip_suffix(')')?;
            let (p, s) = inner.split_once(',')?;
            let (p, s): (u8, i8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
            if p == 0 || p > 38 || s < 0 || s as u8 > p {
                return None;
            }
            DataType::Decimal128(p, s)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse() {
        assert_eq!(
            parse_type("decimal(12, 2)"),
            Some(DataType::Decimal128(12, 2))
        );
        assert_eq!(parse_type("Date"), Some(DataType::Date32));
        assert!(parse_type("decimal(2,3)").is_none());
        assert!(parse_type("money").is_none());
    }

    #[test]
    fn shipped_contracts_load_and_imply_checks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/contracts");
        for t in ["customers", "orders", "events", "survey_responses"] {
            let c = Contract::load(&dir.join(format!("{t}.yaml"))).unwrap();
            assert_eq!(c.table, t);
            assert!(!c.checks().is_empty(), "{t}");
        }
    }

    #[test]
    fn unknown_type_names_the_column_and_the_valid_types() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "table: t\ncolumns:\n  - { name: a, type: money }\n").unwrap();
        let err = Contract::load(&f).unwrap_err().to_string();
        assert!(
            err.contains("column `a`: unknown type `money`; use string"),
            "{err}"
        );
    }
}
