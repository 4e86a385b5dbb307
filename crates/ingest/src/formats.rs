//! Parsing dates and timestamps written in a declared format (`%d/%m/%Y %H:%M`), for exports
//! that do not write ISO 8601.
//!
//! DataFusion's `to_timestamp(value, format)` fails the whole query on the first value that
//! does not match; ingest needs a null there instead, so the row can be quarantined. These two
//! functions are that: chrono's parser over a string array, null where a value does not parse.
//! Timestamps without an offset in the format are taken as UTC.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use segflow_core::datafusion::arrow::array::{Array, ArrayRef, PrimitiveArray, StringArray};
use segflow_core::datafusion::arrow::compute::cast;
use segflow_core::datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, TimeUnit, TimestampMicrosecondType,
};
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarUDF, Volatility, create_udf,
};
use segflow_core::datafusion::scalar::ScalarValue;

fn format_arg(args: &[ColumnarValue]) -> DfResult<String> {
    match &args[1] {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(f))) => Ok(f.clone()),
        _ => Err(DataFusionError::Plan(
            "the format argument must be a non-null string literal".into(),
        )),
    }
}

fn strings(arg: &ColumnarValue) -> DfResult<StringArray> {
    let array = arg.to_array(1)?;
    let array = cast(&array, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray")
        .clone())
}

/// Whether a chrono format carries a UTC offset, so values parse as `DateTime` not naive.
fn has_offset(format: &str) -> bool {
    ["%z", "%:z", "%#z", "%Z", "%+"]
        .iter()
        .any(|f| format.contains(f))
}

/// `value` parsed with `format` as a UTC timestamp (microseconds), or null.
pub fn parse_timestamp_micros(value: &str, format: &str) -> Option<i64> {
    if has_offset(format) {
        DateTime::parse_from_str(value, format)
            .ok()
            .map(|t| t.timestamp_micros())
    } else {
        NaiveDateTime::parse_from_str(value, format)
            .ok()
            .map(|t| t.and_utc().timestamp_micros())
    }
}

/// `value` parsed with `format` as days since 1970-01-01, or null.
pub fn parse_date_days(value: &str, format: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(value, format).ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    i32::try_from((d - epoch).num_days()).ok()
}

/// A `name(value, format)` function: `parse` over each value, null where it gives `None`.
fn format_udf<T: ArrowPrimitiveType>(
    name: &str,
    return_type: DataType,
    parse: fn(&str, &str) -> Option<T::Native>,
) -> Arc<ScalarUDF> {
    let out_type = return_type.clone();
    Arc::new(create_udf(
        name,
        vec![DataType::Utf8, DataType::Utf8],
        return_type,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let format = format_arg(args)?;
            let values = strings(&args[0])?;
            let out: PrimitiveArray<T> = values
                .iter()
                .map(|v| v.and_then(|v| parse(v, &format)))
                .collect();
            // Sets the timestamp's time zone; a no-op for dates.
            let out = out.with_data_type(out_type.clone());
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ))
}

static PARSE_TIMESTAMP: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    format_udf::<TimestampMicrosecondType>(
        "segflow_parse_timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        parse_timestamp_micros,
    )
});

static PARSE_DATE: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    format_udf::<Date32Type>("segflow_parse_date", DataType::Date32, parse_date_days)
});

/// `segflow_parse_timestamp(value, format)`.
pub fn parse_timestamp(value: Expr, format: Expr) -> Expr {
    PARSE_TIMESTAMP.call(vec![value, format])
}

/// `segflow_parse_date(value, format)`.
pub fn parse_date(value: Expr, format: Expr) -> Expr {
    PARSE_DATE.call(vec![value, format])
}

/// Checks a format against chrono before any data is read, so a typo fails validation.
pub fn check_format(format: &str, date_only: bool) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!("`{format}` is not a valid chrono format"));
    }
    if date_only && ["%H", "%M", "%S"].iter().any(|f| format.contains(f)) {
        return Err(format!(
            "`{format}` has time fields; the column is a date (declare it a timestamp)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_and_without_offset() {
        let t = parse_timestamp_micros("12/01/2010 08:26", "%m/%d/%Y %H:%M").unwrap();
        assert_eq!(
            DateTime::from_timestamp_micros(t).unwrap().to_rfc3339(),
            "2010-12-01T08:26:00+00:00"
        );
        let t = parse_timestamp_micros("2010-12-01 08:26:00 +0100", "%Y-%m-%d %H:%M:%S %z");
        assert_eq!(
            t.map(|t| DateTime::from_timestamp_micros(t).unwrap().to_rfc3339()),
            Some("2010-12-01T07:26:00+00:00".into())
        );
        assert_eq!(
            parse_timestamp_micros("13/45/2010 08:26", "%m/%d/%Y %H:%M"),
            None
        );
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_date_days("02/01/1970", "%d/%m/%Y"), Some(1));
        assert_eq!(parse_date_days("19700102", "%Y%m%d"), Some(1));
        assert_eq!(parse_date_days("1970-01-02", "%d/%m/%Y"), None);
    }

    #[test]
    fn formats_are_checked() {
        assert!(check_format("%d/%m/%Y", true).is_ok());
        assert!(check_format("%d/%m/%Y %H:%M", true).is_err());
        assert!(check_format("%Q", false).is_err());
    }
}
