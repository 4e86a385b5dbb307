//! Parsing dates and timestamps written in a declared format (`%d/%m/%Y %H:%M`), for exports
//! that do not write ISO 8601.
//!
//! DataFusion's `to_timestamp(value, format)` fails the whole query on the first value that
//! does not match; ingest needs a null there instead, so the row can be quarantined. These two
//! functions are that: chrono's parser, `None` where a value does not parse
//! ([`crate::row_checks`] runs them over a batch). Timestamps without an offset in the format
//! are taken as UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

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
