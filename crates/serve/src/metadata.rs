//! What the server says about itself and its types: GetSqlInfo, GetXdbcTypeInfo, and the
//! (empty) key listings. JDBC tools call these on connecting and when they show a table; an
//! `UNIMPLEMENTED` there shows as an error dialog in DBeaver.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlSupportedCaseSensitivity, SqlSupportedTransaction,
    XdbcDataType, XdbcDatetimeSubcode,
};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// GetSqlInfo's answers.
pub fn sql_info(statement_timeout: Duration) -> SqlInfoData {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "segflow");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (Schema.fbs), which arrow-rs writes.
    info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    info.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        i32::try_from(statement_timeout.as_millis()).unwrap_or(i32::MAX),
    );
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    // DataFusion folds unquoted identifiers to lower case and keeps quoted ones.
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    info.append(SqlInfo::SqlAllTablesAreSelectable, true);
    info.build().expect("static SqlInfo values build")
}

/// One SQL type as JDBC's `getTypeInfo` lists it.
fn xdbc(name: &str, data_type: XdbcDataType, column_size: Option<i32>) -> XdbcTypeInfo {
    let text = matches!(data_type, XdbcDataType::XdbcVarchar);
    let numeric = matches!(
        data_type,
        XdbcDataType::XdbcTinyint
            | XdbcDataType::XdbcSmallint
            | XdbcDataType::XdbcInteger
            | XdbcDataType::XdbcBigint
            | XdbcDataType::XdbcReal
            | XdbcDataType::XdbcDouble
            | XdbcDataType::XdbcDecimal
    );
    let quoted = text
        || matches!(
            data_type,
            XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp
        );
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: quoted.then(|| "'".into()),
        literal_suffix: quoted.then(|| "'".into()),
        create_params: (data_type == XdbcDataType::XdbcDecimal)
            .then(|| vec!["precision".into(), "scale".into()]),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: text,
        searchable: Searchable::Full,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale: data_type == XdbcDataType::XdbcDecimal,
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.into()),
        minimum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(0),
        maximum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(38),
        // JDBC's sql_data_type of a date/time type is DATETIME, with the kind in the subcode.
        sql_data_type: match data_type {
            XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp => XdbcDataType::XdbcDatetime,
            other => other,
        },
        datetime_subcode: match data_type {
            // The protocol's DATE subcode is 1, which prost names by its alias YEAR.
            XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            _ => None,
        },
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

/// GetXdbcTypeInfo's answers: the SQL types of segflow's tables, as DataFusion names them.
pub fn xdbc_types() -> XdbcTypeInfoData {
    let mut types = XdbcTypeInfoDataBuilder::new();
    for t in [
        xdbc("BOOLEAN", XdbcDataType::XdbcBit, Some(1)),
        xdbc("TINYINT", XdbcDataType::XdbcTinyint, Some(3)),
        xdbc("SMALLINT", XdbcDataType::XdbcSmallint, Some(5)),
        xdbc("INT", XdbcDataType::XdbcInteger, Some(10)),
        xdbc("BIGINT", XdbcDataType::XdbcBigint, Some(19)),
        xdbc("REAL", XdbcDataType::XdbcReal, Some(7)),
        xdbc("DOUBLE", XdbcDataType::XdbcDouble, Some(15)),
        xdbc("DECIMAL", XdbcDataType::XdbcDecimal, Some(38)),
        xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None),
        xdbc("DATE", XdbcDataType::XdbcDate, Some(10)),
        xdbc("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29)),
    ] {
        types.append(t);
    }
    types.build().expect("static type info builds")
}

/// GetPrimaryKeys' schema (the Flight SQL spec's). Published tables declare no keys, so the
/// answer is this schema and no rows.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("catalog_name", true),
        text("db_schema_name", true),
        text("table_name", false),
        text("column_name", false),
        text("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// GetExportedKeys' and GetImportedKeys' schema (the spec's); no foreign keys either.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// A text column of the key listings' schemas.
fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
