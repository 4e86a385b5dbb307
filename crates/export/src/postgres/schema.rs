//! Arrow types as PostgreSQL types, table DDL, and the contract's comments.
//!
//! The mapping is exact: decimal(p,s) is numeric(p,s), date is date, a timestamp with a time
//! zone is timestamptz (without, timestamp), int is integer, bigint is bigint, double is
//! double precision, boolean is boolean, string is text. A type with no exact equivalent
//! (unsigned 64-bit, lists, structs) is refused with the column's name.

use segflow_core::comments::Comments;
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::connect::{ident, literal};
use crate::error::{ExportError, Result};

/// One column of a synced table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The column's name, as in the Delta table.
    pub name: String,
    /// As PostgreSQL's `format_type` writes it (`numeric(18,2)`, `timestamp with time zone`),
    /// so that it compares with an existing table's columns.
    pub pg_type: String,
    /// The Arrow type the COPY encoder is given (strings as Utf8, timestamps in microseconds).
    pub arrow: DataType,
}

/// The PostgreSQL type of an Arrow field, and the Arrow type its values are encoded from.
pub fn column(field: &Field) -> Result<Column> {
    let (pg, arrow) = match field.data_type() {
        DataType::Boolean => ("boolean".to_string(), DataType::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
            ("smallint".to_string(), DataType::Int16)
        }
        DataType::Int32 | DataType::UInt16 => ("integer".to_string(), DataType::Int32),
        DataType::Int64 | DataType::UInt32 => ("bigint".to_string(), DataType::Int64),
        DataType::Float16 | DataType::Float32 => ("real".to_string(), DataType::Float32),
        DataType::Float64 => ("double precision".to_string(), DataType::Float64),
        DataType::Decimal128(p, s) if *s >= 0 => {
            (format!("numeric({p},{s})"), DataType::Decimal128(*p, *s))
        }
        DataType::Date32 | DataType::Date64 => ("date".to_string(), DataType::Date32),
        DataType::Timestamp(_, Some(tz)) => (
            "timestamp with time zone".to_string(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz.clone())),
        ),
        DataType::Timestamp(_, None) => (
            "timestamp without time zone".to_string(),
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            ("text".to_string(), DataType::Utf8)
        }
        DataType::Dictionary(_, v)
            if matches!(
                v.as_ref(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            ("text".to_string(), DataType::Utf8)
        }
        other => {
            return Err(ExportError::Mismatch(format!(
                "column `{}` has type {other}, which has no exact PostgreSQL type; \
                 cast it in the pipeline's SQL to one that has (text, bigint, double, \
                 decimal, date, timestamp, boolean)",
                field.name()
            )));
        }
    };
    Ok(Column {
        name: field.name().clone(),
        pg_type: pg,
        arrow,
    })
}

/// Every column of `schema`.
pub fn columns(schema: &Schema) -> Result<Vec<Column>> {
    schema.fields().iter().map(|f| column(f)).collect()
}

/// `CREATE TABLE` of `table` (schema-qualified, quoted) with `columns`, the `key` columns
/// `NOT NULL` and its primary key.
pub fn create_table(table: &str, columns: &[Column], key: &[String]) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if key.contains(&c.name) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", ident(&c.name), c.pg_type)
        })
        .collect();
    if !key.is_empty() {
        let cols: Vec<String> = key.iter().map(|k| ident(k)).collect();
        defs.push(format!("PRIMARY KEY ({})", cols.join(", ")));
    }
    format!("CREATE TABLE {table} (\n  {}\n)", defs.join(",\n  "))
}

/// `COMMENT ON` statements for `table` (quoted) from the output contract's section on
/// `contract_name`: what a row is, and each column's meaning. Nothing for a table the
/// contract does not describe.
pub fn comments(table: &str, contract_name: &str, columns: &[Column]) -> Vec<String> {
    let contract = Comments::contract();
    let mut out = Vec::new();
    if let Some(about) = contract.table(contract_name) {
        out.push(format!(
            "COMMENT ON TABLE {table} IS {}",
            literal(&format!("segflow {contract_name}: {about}"))
        ));
    }
    for c in columns {
        if let Some(meaning) = contract.get(contract_name, &c.name) {
            out.push(format!(
                "COMMENT ON COLUMN {table}.{} IS {}",
                ident(&c.name),
                literal(meaning)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_exactly() {
        let f = |t: DataType| column(&Field::new("c", t, true)).map(|c| c.pg_type);
        assert_eq!(f(DataType::Decimal128(18, 2)).unwrap(), "numeric(18,2)");
        assert_eq!(f(DataType::Date32).unwrap(), "date");
        assert_eq!(
            f(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
            .unwrap(),
            "timestamp with time zone"
        );
        assert_eq!(f(DataType::Int32).unwrap(), "integer");
        assert_eq!(f(DataType::Int64).unwrap(), "bigint");
        assert_eq!(f(DataType::Float64).unwrap(), "double precision");
        assert_eq!(f(DataType::Boolean).unwrap(), "boolean");
        assert_eq!(f(DataType::Utf8View).unwrap(), "text");
        let e = f(DataType::UInt64).unwrap_err().to_string();
        assert!(e.contains("`c`") && e.contains("UInt64"), "{e}");
    }

    #[test]
    fn ddl_has_the_key_and_the_contract_comments() {
        let cols = vec![
            column(&Field::new("customer_id", DataType::Utf8, false)).unwrap(),
            column(&Field::new("rfm_segment", DataType::Utf8, true)).unwrap(),
        ];
        let ddl = create_table("\"s\".\"t\"", &cols, &["customer_id".to_string()]);
        assert!(ddl.contains("\"customer_id\" text NOT NULL"), "{ddl}");
        assert!(ddl.contains("PRIMARY KEY (\"customer_id\")"), "{ddl}");
        let c = comments("\"s\".\"t\"", "customer_segments", &cols);
        assert!(c[0].starts_with(
            "COMMENT ON TABLE \"s\".\"t\" IS 'segflow customer_segments: one row per customer"
        ));
        assert!(
            c.iter()
                .any(|s| s.contains("\"rfm_segment\" IS 'champions"))
        );
    }
}
