//! Typing every field and checking every row against its contract, on the reader's thread.
//!
//! A reader collects a batch's fields as text (an empty field is null). For each batch, this
//! module types every column with Arrow's cast kernels (the ones DataFusion's `try_cast` runs,
//! so a value parses here exactly as it does in SQL) or, for a column with a declared date or
//! timestamp format, with chrono ([`crate::formats`]). It then finds each row's first problem
//! in column order: empty but required, not of its type, not an accepted value, out of range.
//! A problem the reader found (a short row, invalid UTF-8, a line that is not JSON) comes
//! before all of them.
//!
//! Typing in the reader, not in a projection after it, means a field's text is dropped as soon
//! as its batch is typed: the ingest carries typed values, not text, from its first operator
//! on. Only the rows found bad keep their fields' text, in their message.
//!
//! Reason codes (stable; documented in docs/input-contract.md, "Quarantine"): `missing_key`,
//! `missing_value`, `bad_number`, `bad_date`, `bad_timestamp`, `bad_boolean`, `not_accepted`,
//! `out_of_range`, and the reader's own `column_count`, `bad_json`, `invalid_utf8`.

use std::collections::HashSet;
use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Scalar, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use segflow_core::datafusion::arrow::compute::kernels::cmp;
use segflow_core::datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use segflow_core::datafusion::arrow::error::ArrowError;
use segflow_core::datafusion::arrow::util::display::FormatOptions;

use crate::contract::{Column, Contract};
use crate::source::Problem;
use crate::validate::{COLUMN, MESSAGE, Parse, REASON};

/// Every column's typing and checks, and the schema of the rows a reader yields: the
/// reader's own columns ([`crate::source`]), `_reason`, `_column` and `_message` (null for
/// a good row), then the contract's columns, typed.
#[derive(Debug)]
pub struct RowChecks {
    schema: SchemaRef,
    columns: Vec<ColumnCheck>,
}

#[derive(Debug)]
struct ColumnCheck {
    name: String,
    data_type: DataType,
    /// A chrono format for a date or timestamp column.
    format: Option<String>,
    /// The reason an empty value gets; `None`: it may be empty.
    missing: Option<&'static str>,
    /// The reason a value that does not parse gets.
    bad_code: &'static str,
    /// The type, in the words of a message: "a timestamp (ISO 8601, ...)".
    type_words: String,
    /// The accepted values, and the list as a message writes it.
    accepted: Option<(HashSet<String>, String)>,
    /// The bounds as one-value arrays of the column's type.
    min: Option<ArrayRef>,
    max: Option<ArrayRef>,
    /// `min..max`, as a message writes it.
    range: String,
}

/// What a row's first problem is; its column is the one it was found in.
#[derive(Debug, Clone, Copy)]
enum Found {
    Missing,
    BadType,
    NotAccepted,
    OutOfRange,
}

/// A checked batch's columns: the reason, column and message of each row's first problem,
/// and the typed values.
pub(crate) struct Checked {
    pub reason: StringArray,
    pub column: StringArray,
    pub message: StringArray,
    pub values: Vec<ArrayRef>,
}

/// The reason code for a value of this type that does not parse.
fn bad_code(t: &DataType) -> &'static str {
    match t {
        DataType::Date32 => "bad_date",
        DataType::Timestamp(..) => "bad_timestamp",
        DataType::Boolean => "bad_boolean",
        _ => "bad_number",
    }
}

fn type_words(c: &Column, parse: &Parse) -> String {
    match (&c.data_type, &parse.format) {
        (DataType::Date32 | DataType::Timestamp(..), Some(f)) => {
            format!("a {} in the format {f}", c.type_name)
        }
        (DataType::Date32, None) => "a date (YYYY-MM-DD)".into(),
        (DataType::Timestamp(..), None) => {
            "a timestamp (ISO 8601, e.g. 2026-03-01T14:22:05Z)".into()
        }
        (DataType::Boolean, _) => "a boolean (true/false)".into(),
        _ => format!("a {}", c.type_name),
    }
}

/// As DataFusion's `try_cast`: a value that does not parse becomes null.
fn try_cast_options() -> CastOptions<'static> {
    CastOptions {
        safe: true,
        format_options: FormatOptions::default(),
    }
}

impl RowChecks {
    /// The checks of `contract`, with `parses[i]` for its column `i`; `now` is the clock
    /// `max: now` compares with. Fails on a bound that is not a value of its column's type.
    pub fn new(
        contract: &Contract,
        parses: &[Parse],
        now: chrono::DateTime<chrono::Utc>,
        meta: Vec<Field>,
    ) -> Result<Self, String> {
        let mut columns = Vec::new();
        for (c, parse) in contract.columns.iter().zip(parses) {
            let bound = |b: Option<&crate::contract::Bound>, which: &str| {
                b.map(|b| {
                    let text = b.as_text(&c.data_type, now);
                    let strict = CastOptions {
                        safe: false,
                        format_options: FormatOptions::default(),
                    };
                    cast_with_options(
                        &StringArray::from(vec![text.as_str()]),
                        &c.data_type,
                        &strict,
                    )
                    .map_err(|e| {
                        format!(
                            "{}: column `{}`: `{which}: {text}` is not a {} ({e})",
                            contract.file.display(),
                            c.name,
                            c.type_name
                        )
                    })
                })
                .transpose()
            };
            let text = |b: &Option<crate::contract::Bound>| {
                b.as_ref()
                    .map(|b| b.as_text(&c.data_type, now))
                    .unwrap_or_default()
            };
            columns.push(ColumnCheck {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                format: match c.data_type {
                    DataType::Date32 | DataType::Timestamp(..) => parse.format.clone(),
                    _ => None,
                },
                missing: match (c.nullable, contract.unique.contains(&c.name)) {
                    (true, _) => None,
                    (false, true) => Some("missing_key"),
                    (false, false) => Some("missing_value"),
                },
                bad_code: bad_code(&c.data_type),
                type_words: type_words(c, parse),
                accepted: c
                    .accepted_values
                    .as_ref()
                    .map(|v| (v.iter().cloned().collect(), v.join(", "))),
                min: bound(c.min.as_ref(), "min")?,
                max: bound(c.max.as_ref(), "max")?,
                range: format!("{}..{}", text(&c.min), text(&c.max)),
            });
        }
        let mut fields = meta;
        fields.extend([
            Field::new(REASON, DataType::Utf8, true),
            Field::new(COLUMN, DataType::Utf8, true),
            Field::new(MESSAGE, DataType::Utf8, true),
        ]);
        fields.extend(
            columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), true)),
        );
        Ok(RowChecks {
            schema: Arc::new(Schema::new(fields)),
            columns,
        })
    }

    /// The schema of the checked rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// How many contract columns there are.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The name of contract column `i`.
    pub fn column_name(&self, i: usize) -> &str {
        &self.columns[i].name
    }

    /// Types the fields of a batch of `rows` rows (`texts[i]`: contract column `i`) and finds
    /// each row's first problem. `problems`: the rows the reader could not use, by row
    /// (ascending); their fields are all null and their problem is the reader's.
    pub(crate) fn check(
        &self,
        rows: usize,
        texts: &[StringArray],
        problems: &[(usize, Problem)],
    ) -> Result<Checked, ArrowError> {
        let mut found: Vec<Option<(usize, Found)>> = vec![None; rows];
        let mut unusable = vec![false; rows];
        for (row, _) in problems {
            unusable[*row] = true;
        }
        let mut values = Vec::with_capacity(self.columns.len());
        for (i, (c, text)) in self.columns.iter().zip(texts).enumerate() {
            let value = c.typed(text)?;
            let not_accepted = c.not_accepted(text, &value)?;
            let out_of_range = c.out_of_range(&value)?;
            let flagged = |m: &Option<BooleanArray>, row: usize| {
                m.as_ref().is_some_and(|m| m.is_valid(row) && m.value(row))
            };
            for row in 0..rows {
                if found[row].is_some() || unusable[row] {
                    continue;
                }
                let problem = if text.is_null(row) {
                    c.missing.map(|_| Found::Missing)
                } else if c.data_type != DataType::Utf8 && value.is_null(row) {
                    Some(Found::BadType)
                } else if flagged(&not_accepted, row) {
                    Some(Found::NotAccepted)
                } else if flagged(&out_of_range, row) {
                    Some(Found::OutOfRange)
                } else {
                    None
                };
                found[row] = problem.map(|p| (i, p));
            }
            values.push(value);
        }

        let mut reason = StringBuilder::new();
        let mut column = StringBuilder::new();
        let mut message = StringBuilder::new();
        let mut problems = problems.iter().peekable();
        for (row, f) in found.iter().enumerate() {
            if let Some((_, p)) = problems.next_if(|(r, _)| *r == row) {
                reason.append_value(p.code);
                column.append_option(p.column.as_deref());
                message.append_value(&p.message);
                continue;
            }
            let Some((i, f)) = f else {
                reason.append_null();
                column.append_null();
                message.append_null();
                continue;
            };
            let c = &self.columns[*i];
            let raw = || texts[*i].value(row);
            let (code, text) = match f {
                Found::Missing => (
                    c.missing.expect("only required columns are missing"),
                    format!("`{}` is empty; it is required", c.name),
                ),
                Found::BadType => (c.bad_code, format!("'{}' is not {}", raw(), c.type_words)),
                Found::NotAccepted => (
                    "not_accepted",
                    format!(
                        "'{}' is not one of: {}",
                        raw(),
                        c.accepted.as_ref().expect("checked").1
                    ),
                ),
                Found::OutOfRange => (
                    "out_of_range",
                    format!("'{}' is outside {}", raw(), c.range),
                ),
            };
            reason.append_value(code);
            column.append_value(&c.name);
            message.append_value(text);
        }
        Ok(Checked {
            reason: reason.finish(),
            column: column.finish(),
            message: message.finish(),
            values,
        })
    }
}

/// `text` with the values `keep` refuses made null (as is when it refuses none).
fn only(text: &StringArray, keep: fn(&str) -> bool) -> StringArray {
    if text.iter().flatten().all(keep) {
        return text.clone();
    }
    text.iter().map(|v| v.filter(|v| keep(v))).collect()
}

impl ColumnCheck {
    /// The column's values, typed; null where the text is null or does not parse.
    fn typed(&self, text: &StringArray) -> Result<ArrayRef, ArrowError> {
        Ok(match (&self.data_type, &self.format) {
            (DataType::Utf8, _) => Arc::new(text.clone()),
            (DataType::Date32, Some(f)) => Arc::new(
                text.iter()
                    .map(|v| v.and_then(|v| crate::formats::parse_date_days(v, f)))
                    .collect::<Date32Array>(),
            ),
            (DataType::Timestamp(..), Some(f)) => Arc::new(
                text.iter()
                    .map(|v| v.and_then(|v| crate::formats::parse_timestamp_micros(v, f)))
                    .collect::<TimestampMicrosecondArray>()
                    .with_data_type(self.data_type.clone()),
            ),
            // Without a `format:`, only the contract's ISO forms are dates and timestamps;
            // other text is null here, so the row is quarantined as bad_date/bad_timestamp.
            (DataType::Date32, None) => cast_with_options(
                &only(text, crate::formats::is_iso_date),
                &self.data_type,
                &try_cast_options(),
            )?,
            (DataType::Timestamp(..), None) => cast_with_options(
                &only(text, crate::formats::is_iso_timestamp),
                &self.data_type,
                &try_cast_options(),
            )?,
            (t, _) => cast_with_options(text, t, &try_cast_options())?,
        })
    }

    /// Per row, whether its value is not one of the accepted values (null: no value). The
    /// value is compared as text, as SQL's `CAST(value AS VARCHAR) IN (...)` would.
    fn not_accepted(
        &self,
        text: &StringArray,
        value: &ArrayRef,
    ) -> Result<Option<BooleanArray>, ArrowError> {
        let Some((accepted, _)) = &self.accepted else {
            return Ok(None);
        };
        let as_text = match self.data_type {
            DataType::Utf8 => Arc::new(text.clone()) as ArrayRef,
            _ => cast(value, &DataType::Utf8)?,
        };
        Ok(Some(
            as_text
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(|v| !accepted.contains(v)))
                .collect(),
        ))
    }

    /// Per row, whether its value is below `min` or above `max` (null: no value).
    fn out_of_range(&self, value: &ArrayRef) -> Result<Option<BooleanArray>, ArrowError> {
        let below = self
            .min
            .as_ref()
            .map(|m| cmp::lt(value, &Scalar::new(m.clone())))
            .transpose()?;
        let above = self
            .max
            .as_ref()
            .map(|m| cmp::gt(value, &Scalar::new(m.clone())))
            .transpose()?;
        Ok(match (below, above) {
            (Some(b), Some(a)) => {
                Some(segflow_core::datafusion::arrow::compute::kernels::boolean::or_kleene(&b, &a)?)
            }
            (b, a) => b.or(a),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;

    fn checks(contract: &str, formats: &[Option<&str>]) -> RowChecks {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.yaml");
        std::fs::write(&file, contract).unwrap();
        let contract = Contract::load(&file).unwrap();
        let parses: Vec<Parse> = formats
            .iter()
            .map(|f| Parse {
                format: f.map(String::from),
            })
            .collect();
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .to_utc();
        RowChecks::new(&contract, &parses, now, Vec::new()).unwrap()
    }

    fn texts(columns: &[&[Option<&str>]]) -> Vec<StringArray> {
        columns
            .iter()
            .map(|c| StringArray::from(c.to_vec()))
            .collect()
    }

    const CONTRACT: &str = "table: t\nunique: [id]\ncolumns:\n  \
        - { name: id, type: string, nullable: false }\n  \
        - { name: n, type: int, min: 1, max: 5 }\n  \
        - { name: kind, type: string, accepted_values: [a, b] }\n  \
        - { name: at, type: timestamp, max: now }\n  \
        - { name: day, type: date }\n";

    #[test]
    fn each_row_gets_its_first_problem_in_column_order() {
        let c = checks(CONTRACT, &[None, None, None, None, Some("%d/%m/%Y")]);
        let rows = texts(&[
            &[
                Some("1"),
                None,
                Some("3"),
                Some("4"),
                Some("5"),
                Some("6"),
                Some("7"),
            ],
            &[
                Some("2"),
                Some("2"),
                Some("x"),
                Some("9"),
                Some("2"),
                Some("2"),
                Some("2"),
            ],
            &[
                Some("a"),
                Some("a"),
                Some("c"),
                Some("a"),
                Some("c"),
                None,
                Some("b"),
            ],
            &[
                None,
                None,
                None,
                None,
                None,
                Some("2027-01-01T00:00:00Z"),
                Some("2026-02-01T10:00:00Z"),
            ],
            &[None, None, None, None, None, None, Some("03/02/2026")],
        ]);
        let out = c.check(7, &rows, &[]).unwrap();
        fn v(a: &StringArray, i: usize) -> Option<&str> {
            a.is_valid(i).then(|| a.value(i))
        }
        let got: Vec<(Option<&str>, Option<&str>, Option<&str>)> = (0..7)
            .map(|i| (v(&out.reason, i), v(&out.column, i), v(&out.message, i)))
            .collect();
        assert_eq!(
            got,
            [
                (None, None, None),
                (
                    Some("missing_key"),
                    Some("id"),
                    Some("`id` is empty; it is required")
                ),
                // Two problems: the first column's is the one reported.
                (Some("bad_number"), Some("n"), Some("'x' is not a int")),
                (Some("out_of_range"), Some("n"), Some("'9' is outside 1..5")),
                (
                    Some("not_accepted"),
                    Some("kind"),
                    Some("'c' is not one of: a, b")
                ),
                (
                    Some("out_of_range"),
                    Some("at"),
                    Some("'2027-01-01T00:00:00Z' is outside ..2026-03-01T12:00:00Z")
                ),
                (None, None, None),
            ]
        );
        // Typed values, null where a value does not parse.
        let n =
            out.values[1].as_primitive::<segflow_core::datafusion::arrow::datatypes::Int32Type>();
        assert_eq!(n.iter().collect::<Vec<_>>()[..3], [Some(2), Some(2), None]);
        let day =
            out.values[4].as_primitive::<segflow_core::datafusion::arrow::datatypes::Date32Type>();
        assert_eq!(day.value(6), 20487, "2026-02-03 in days since 1970-01-01");
    }

    #[test]
    fn dates_and_timestamps_outside_the_iso_forms_are_bad() {
        let c = checks(CONTRACT, &[None; 5]);
        let ids: Vec<Option<&str>> = vec![Some("1"), Some("2"), Some("3"), Some("4")];
        let rows = texts(&[
            &ids,
            &[None; 4],
            &[None; 4],
            &[
                Some("2026-01-05T10:00:00Z"),
                Some("2026-01-05 10:00:00"),
                None,
                None,
            ],
            &[None, None, Some("2023-1-5"), Some("2023-01-05")],
        ]);
        let out = c.check(4, &rows, &[]).unwrap();
        let reasons: Vec<Option<&str>> = out.reason.iter().collect();
        assert_eq!(
            reasons,
            [None, Some("bad_timestamp"), Some("bad_date"), None],
            "{:?}",
            out.message
        );
        assert_eq!(
            out.message.value(2),
            "'2023-1-5' is not a date (YYYY-MM-DD)"
        );
    }

    #[test]
    fn a_row_the_reader_could_not_use_keeps_the_readers_problem() {
        let c = checks(CONTRACT, &[None; 5]);
        let rows = texts(&[
            &[None, Some("1")],
            &[None, Some("x")],
            &[None, None],
            &[None, None],
            &[None, None],
        ]);
        let problem = Problem {
            code: "column_count",
            column: None,
            message: "has 2 fields, the header has 5".into(),
        };
        let out = c.check(2, &rows, &[(0, problem)]).unwrap();
        assert_eq!(out.reason.value(0), "column_count");
        assert!(out.column.is_null(0));
        assert_eq!(out.message.value(0), "has 2 fields, the header has 5");
        assert_eq!(out.reason.value(1), "bad_number");
    }

    #[test]
    fn a_bound_that_is_not_of_its_columns_type_names_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.yaml");
        std::fs::write(
            &file,
            "table: t\ncolumns:\n  - { name: at, type: timestamp, min: \"soon\" }\n",
        )
        .unwrap();
        let contract = Contract::load(&file).unwrap();
        let err = RowChecks::new(
            &contract,
            &[Parse { format: None }],
            chrono::Utc::now(),
            Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.contains("t.yaml: column `at`: `min: soon` is not a timestamp"),
            "{err}"
        );
    }
}
