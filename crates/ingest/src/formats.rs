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

/// Whether `value` is a date in the contract's form, `YYYY-MM-DD`: Arrow's cast alone also takes
/// `2023-1-5`, which a contract that says YYYY-MM-DD must not.
pub fn is_iso_date(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Whether `value` is an ISO 8601 timestamp: `YYYY-MM-DDTHH:MM:SS`, then an optional fraction
/// (`.` and 1 to 9 digits), then an optional zone (`Z`, `+HH:MM`, `-HH:MM`; none means UTC).
/// Arrow's cast alone also takes a space for the `T`, a missing seconds field or a one-digit
/// month.
pub fn is_iso_timestamp(value: &str) -> bool {
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 19
        || !is_iso_date(&value[..10])
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || !digits(11..13)
        || !digits(14..16)
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [] | [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] => {
            matches!(sign, b'+' | b'-') && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
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
    fn only_the_iso_forms_pass_without_a_format() {
        for ok in ["2023-01-05", "1999-12-31"] {
            assert!(is_iso_date(ok), "{ok}");
        }
        for bad in [
            "2023-1-5",
            "2023-01-5",
            "20230105",
            "2023/01/05",
            "2023-01-05 ",
            " 2023-01-05",
            "２０２３-01-05",
        ] {
            assert!(!is_iso_date(bad), "{bad}");
        }
        for ok in [
            "2026-03-01T14:22:05Z",
            "2026-03-01T14:22:05",
            "2026-03-01T14:22:05.123Z",
            "2026-03-01T14:22:05.123456789+02:00",
            "2026-03-01T14:22:05-05:30",
        ] {
            assert!(is_iso_timestamp(ok), "{ok}");
        }
        for bad in [
            "2026-03-01 14:22:05",
            "2026-03-01T14:22",
            "2026-3-01T14:22:05Z",
            "2026-03-01T14:22:05.Z",
            "2026-03-01T14:22:05.1234567890Z",
            "2026-03-01T14:22:05+0200",
            "2026-03-01T14:22:05 UTC",
            "2026-03-01",
        ] {
            assert!(!is_iso_timestamp(bad), "{bad}");
        }
    }

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
