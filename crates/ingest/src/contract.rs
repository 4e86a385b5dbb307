//! Table contracts: what an input table must look like.
//!
//! ```yaml
//! table: orders
//! description: One row per order, as exported by the CRM.
//! unique: [order_id]
//! on_duplicate: keep_first        # or keep_last, quarantine_all
//! references:
//!   - { columns: [customer_id], table: customers, reason: unknown_customer }
//! columns:
//!   - { name: order_id, type: string, nullable: false }
//!   - { name: amount, type: "decimal(12,2)", min: -1000000, max: 1000000 }
//!   - { name: channel, type: string, accepted_values: [web, store, app] }
//! ```
//!
//! A row that breaks any of these is quarantined with a stable reason code (see
//! [`crate::file_stage`]), never dropped silently.

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
    /// Which copy of a duplicated key is kept; the others are quarantined as `duplicate_key`.
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
    /// For `keep_first` / `keep_last`: the column that orders the copies (e.g. `updated_at`);
    /// file order (file, then line) when unset or tied.
    #[serde(default)]
    pub duplicate_order_by: Option<String>,
    /// Foreign keys: values that must exist in a table produced earlier in the run.
    #[serde(default)]
    pub references: Vec<Reference>,
    /// The columns, in the order the table will have them.
    pub columns: Vec<Column>,
    /// Where the contract was read from (set on load).
    #[serde(skip)]
    pub file: PathBuf,
    /// The YAML it was read from, as written: what a plan sent to another machine carries
    /// ([`Contract::parse`] reads it there).
    #[serde(skip)]
    pub text: String,
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
    /// Smallest allowed value (a number, or a date / timestamp in the column's format).
    #[serde(default)]
    pub min: Option<Bound>,
    /// Largest allowed value.
    #[serde(default)]
    pub max: Option<Bound>,
    /// What the column means.
    #[serde(default)]
    pub description: Option<String>,
    /// The Arrow type, resolved from `type_name` on load.
    #[serde(skip, default = "utf8")]
    pub data_type: DataType,
}

/// A range bound as written in YAML: `5`, `-1000.5` or `"2000-01-01"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// A number.
    Number(f64),
    /// A date, timestamp or other literal, cast to the column's type.
    Text(String),
}

impl Bound {
    /// The bound as SQL literal text, cast to the column type where it is used. `now` (for
    /// dates and timestamps: nothing in the future) is the ingest's clock: the run's start
    /// or the stage's `today`.
    pub fn as_text(&self, data_type: &DataType, now: chrono::DateTime<chrono::Utc>) -> String {
        match self {
            Bound::Number(n) => n.to_string(),
            Bound::Text(t) if t == "now" => match data_type {
                DataType::Date32 => now.date_naive().to_string(),
                _ => now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
            Bound::Text(t) => t.clone(),
        }
    }
}

/// What to do with rows that share a `unique` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    /// Keep the first copy (by `duplicate_order_by`, then file order); quarantine the others.
    #[default]
    KeepFirst,
    /// Keep the last copy; quarantine the others.
    KeepLast,
    /// Quarantine every copy of a duplicated key.
    QuarantineAll,
}

/// A foreign key: `columns` must match a row of `table` (same column names there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Columns of this table.
    pub columns: Vec<String>,
    /// A table produced earlier in the run (the stage waits for it).
    pub table: String,
    /// The quarantine reason code for a row without a match, e.g. `unknown_customer`.
    #[serde(default = "unknown_reference")]
    pub reason: String,
}

fn unknown_reference() -> String {
    "unknown_reference".into()
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
        Contract::parse(path, text)
    }

    /// The contract in `text`, read from `path` (which messages name).
    pub fn parse(path: &Path, text: String) -> Result<Contract> {
        let mut c: Contract = yaml::from_str(path, &text)?;
        c.file = path.to_path_buf();
        c.text = text;
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
        let named = |what: &str, k: &str| {
            if seen.contains(k) {
                Ok(())
            } else {
                Err(invalid(format!(
                    "`{what}` names `{k}`, which is not a column; the columns are: {}",
                    seen.iter().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
        };
        for k in &c.unique {
            named("unique", k)?;
        }
        if let Some(k) = &c.duplicate_order_by {
            named("duplicate_order_by", k)?;
        }
        for r in &c.references {
            if r.columns.is_empty() {
                return Err(invalid(format!(
                    "a reference to `{}` lists no `columns`",
                    r.table
                )));
            }
            for k in &r.columns {
                named("references", k)?;
            }
        }
        for col in &c.columns {
            let numeric = col.data_type.is_numeric();
            for b in [&col.min, &col.max].into_iter().flatten() {
                if matches!(b, Bound::Text(t) if t == "now") && numeric {
                    return Err(invalid(format!(
                        "column `{}`: `now` bounds dates and timestamps, not {}",
                        col.name, col.type_name
                    )));
                }
                if matches!(b, Bound::Number(_)) && !numeric {
                    return Err(invalid(format!(
                        "column `{}`: a numeric `min`/`max` on a {} column; write dates and timestamps in quotes",
                        col.name, col.type_name
                    )));
                }
                if matches!(col.data_type, DataType::Utf8 | DataType::Boolean) {
                    return Err(invalid(format!(
                        "column `{}`: `min`/`max` apply to numbers, dates and timestamps, not {}",
                        col.name, col.type_name
                    )));
                }
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
