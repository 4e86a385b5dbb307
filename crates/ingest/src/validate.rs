//! Typing and validating raw text rows against a contract, as DataFusion expressions.
//!
//! Every check is a vectorized expression over whole columns: `try_cast` for types (a value
//! that does not parse becomes null, which, next to a non-null raw value, marks it bad), `IN`
//! lists, range comparisons, a key count and joins for duplicate keys, and a join per foreign
//! key. The result has the typed columns plus `_reason`, `_column` and `_message` (null
//! for a good row); the first problem in column order is the one reported.
//!
//! Reason codes (stable; documented in README.md, "Quarantine"): `column_count`, `bad_json`, `invalid_utf8`
//! (from the reader), `missing_key`, `missing_value`, `bad_number`, `bad_date`, `bad_timestamp`,
//! `bad_boolean`, `not_accepted`, `out_of_range`, `duplicate_key`, and each reference's own code
//! (e.g. `unknown_customer`).

use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::common::JoinType;
use segflow_core::datafusion::error::Result as DfResult;
use segflow_core::datafusion::functions::expr_fn::{coalesce, concat};
use segflow_core::datafusion::functions_aggregate::expr_fn::count;
use segflow_core::datafusion::functions_window::expr_fn::row_number;
use segflow_core::datafusion::logical_expr::{
    Expr, ExprFunctionExt, Operator, binary_expr, cast, ident, lit, try_cast, when,
};
use segflow_core::datafusion::prelude::DataFrame;

use crate::contract::{Column, Contract, OnDuplicate};
use crate::key_hash::KeyHash;
use crate::reader;

pub const REASON: &str = "_reason";
pub const COLUMN: &str = "_column";
pub const MESSAGE: &str = "_message";

/// How a contract column is read from its text.
#[derive(Debug, Clone)]
pub struct Parse {
    /// A chrono format for dates and timestamps (`%d/%m/%Y %H:%M`); ISO 8601 when unset.
    pub format: Option<String>,
}

fn null_text() -> Expr {
    lit(segflow_core::datafusion::scalar::ScalarValue::Utf8(None))
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

/// The typed value of a column.
pub fn typed(c: &Column, parse: &Parse) -> Expr {
    let v = ident(&c.name);
    match (&c.data_type, &parse.format) {
        (DataType::Utf8, _) => v,
        (DataType::Date32, Some(f)) => crate::formats::parse_date(v, lit(f.clone())),
        (DataType::Timestamp(..), Some(f)) => crate::formats::parse_timestamp(v, lit(f.clone())),
        (t, _) => try_cast(v, t.clone()),
    }
}

/// Row-level problems of one column: `(reason, message)` expressions, null when fine.
fn column_problem(
    c: &Column,
    parse: &Parse,
    is_key: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> DfResult<(Expr, Expr)> {
    let raw = ident(&c.name);
    let value = typed(c, parse);
    let quoted = || concat(vec![lit("'"), ident(&c.name), lit("'")]);
    let mut reason = when(
        raw.clone().is_null(),
        if c.nullable {
            null_text()
        } else if is_key {
            lit("missing_key")
        } else {
            lit("missing_value")
        },
    );
    let mut message = when(
        raw.clone().is_null(),
        if c.nullable {
            null_text()
        } else {
            lit(format!("`{}` is empty; it is required", c.name))
        },
    );
    if c.data_type != DataType::Utf8 {
        reason = reason.when(value.clone().is_null(), lit(bad_code(&c.data_type)));
        message = message.when(
            value.clone().is_null(),
            concat(vec![
                quoted(),
                lit(format!(" is not {}", type_words(c, parse))),
            ]),
        );
    }
    if let Some(values) = &c.accepted_values {
        let list: Vec<Expr> = values.iter().map(|v| lit(v.clone())).collect();
        let ok = cast(value.clone(), DataType::Utf8).in_list(list, false);
        reason = reason.when(!ok.clone(), lit("not_accepted"));
        message = message.when(
            !ok,
            concat(vec![
                quoted(),
                lit(format!(" is not one of: {}", values.join(", "))),
            ]),
        );
    }
    let mut out_of_range: Option<Expr> = None;
    for (bound, below) in [(&c.min, true), (&c.max, false)] {
        if let Some(b) = bound {
            let limit = cast(lit(b.as_text(&c.data_type, now)), c.data_type.clone());
            let broken = if below {
                value.clone().lt(limit)
            } else {
                value.clone().gt(limit)
            };
            out_of_range = Some(match out_of_range {
                Some(e) => e.or(broken),
                None => broken,
            });
        }
    }
    if let Some(broken) = out_of_range {
        let range = format!(
            "{}..{}",
            c.min
                .as_ref()
                .map(|b| b.as_text(&c.data_type, now))
                .unwrap_or_default(),
            c.max
                .as_ref()
                .map(|b| b.as_text(&c.data_type, now))
                .unwrap_or_default()
        );
        reason = reason.when(broken.clone(), lit("out_of_range"));
        message = message.when(
            broken,
            concat(vec![quoted(), lit(format!(" is outside {range}"))]),
        );
    }
    Ok((
        reason.otherwise(null_text())?,
        message.otherwise(null_text())?,
    ))
}

/// Types every column and finds each row's first row-level problem.
///
/// Output: `_source_file`, `_line_number`, `_raw_record` (only on bad rows and where there is
/// no offset), `_raw_offset`, `_raw_length`, `_reason`,
/// `_column`, `_message`, then the contract's columns, typed.
/// `now` is the clock that `max: now` bounds compare with.
pub fn check_rows(
    raw: DataFrame,
    contract: &Contract,
    parses: &[Parse],
    now: chrono::DateTime<chrono::Utc>,
) -> DfResult<DataFrame> {
    let mut reasons = vec![ident(reader::PARSE_ERROR)];
    let mut columns = Vec::new();
    let mut messages = Vec::new();
    for (c, p) in contract.columns.iter().zip(parses) {
        let (reason, message) = column_problem(c, p, contract.unique.contains(&c.name), now)?;
        columns
            .push(when(reason.clone().is_not_null(), lit(c.name.clone())).otherwise(null_text())?);
        reasons.push(reason);
        messages.push(message);
    }
    let parse_failed = ident(reader::PARSE_ERROR).is_not_null();
    let reason = coalesce(reasons);
    let column =
        when(parse_failed.clone(), ident(reader::PARSE_COLUMN)).otherwise(coalesce(columns))?;
    let message = when(parse_failed, ident(reader::PARSE_MESSAGE)).otherwise(coalesce(messages))?;
    let mut select = vec![
        ident(reader::SOURCE_FILE),
        ident(reader::LINE_NUMBER),
        ident(reader::RAW_RECORD),
        ident(reader::RAW_OFFSET),
        ident(reader::RAW_LENGTH),
        reason.alias(REASON),
        column.alias(COLUMN),
        message.alias(MESSAGE),
    ];
    for (c, p) in contract.columns.iter().zip(parses) {
        select.push(typed(c, p).alias(&c.name));
    }
    // The text of a good row is dropped here, before anything stores it: carried along and
    // written with the rows, it is as many bytes again as the values themselves. A row a later check
    // quarantines (a key or a reference) has its text read again from the file, by offset
    // ([`crate::raw_text`]); where the reader gives no offset, the text is kept.
    let keep_raw = ident(REASON)
        .is_not_null()
        .or(ident(reader::RAW_OFFSET).is_null());
    let checked = raw.select(select)?;
    let outputs: Vec<Expr> = checked
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.name() == reader::RAW_RECORD {
                when(keep_raw.clone(), ident(reader::RAW_RECORD))
                    .otherwise(null_text())
                    .map(|e| e.alias(reader::RAW_RECORD))
            } else {
                Ok(ident(f.name()))
            }
        })
        .collect::<DfResult<_>>()?;
    checked.select(outputs)
}

const DUP_FILE: &str = "__dup_file";
const DUP_LINE: &str = "__dup_line";

const HASH: &str = "__key_hash";
const REPEATED_HASH: &str = "__repeated_hash";

fn dup_key(column: &str) -> String {
    format!("__dup_key_{column}")
}

/// The keys that more than one of the `good` rows (those no other check flagged) has, as
/// `__dup_key_<column>` columns; `None` when the contract has no `unique` keys.
///
/// Two hash aggregates, neither over the whole table's text: first the rows are counted per
/// [`KeyHash`] of their key (a `UInt64` group, not a string one), then the exact keys are
/// counted among only the rows whose hash repeats: the duplicates and the rare collisions,
/// usually none. Ordering the whole table by key (a window over every column and the raw
/// text) cost most of an ingest's time; with a GROUP BY over the string key, the key check
/// was still 3.8 s of an orders ingest's 13.7 s at M (release build).
pub fn duplicated_keys(good: DataFrame, contract: &Contract) -> DfResult<Option<DataFrame>> {
    if contract.unique.is_empty() {
        return Ok(None);
    }
    let keys: Vec<Expr> = contract.unique.iter().map(ident).collect();
    let hash = || KeyHash::call(keys.clone());
    let repeated = more_than_one(good.clone(), vec![hash().alias(HASH)])?
        .select(vec![ident(HASH).alias(REPEATED_HASH)])?;
    // The repeated hashes are the small side: they build the hash table, the rows probe it.
    let candidates = repeated.join_on(
        good.select(keys.clone())?,
        JoinType::RightSemi,
        vec![ident(REPEATED_HASH).eq(hash())],
    )?;
    more_than_one(candidates, keys)?
        .select(
            contract
                .unique
                .iter()
                .map(|k| ident(k).alias(dup_key(k)))
                .collect::<Vec<_>>(),
        )
        .map(Some)
}

/// The values of `group` that more than one row of `df` has (with their count, `__dup_n`).
fn more_than_one(df: DataFrame, group: Vec<Expr>) -> DfResult<DataFrame> {
    df.aggregate(group, vec![count(lit(1)).alias("__dup_n")])?
        .filter(ident("__dup_n").gt(lit(1i64)))
}

/// The `good` rows that lose their key (one of `duplicated`, from [`duplicated_keys`]) to
/// another good row under `on_duplicate`, as `(__dup_file, __dup_line)`. Only the rows of
/// duplicated keys are ordered.
pub fn duplicate_rows(
    good: DataFrame,
    duplicated: DataFrame,
    contract: &Contract,
) -> DfResult<DataFrame> {
    let keys: Vec<Expr> = contract.unique.iter().map(ident).collect();
    let mut narrow = keys.clone();
    if let Some(k) = &contract.duplicate_order_by
        && !contract.unique.contains(k)
    {
        narrow.push(ident(k));
    }
    narrow.extend([ident(reader::SOURCE_FILE), ident(reader::LINE_NUMBER)]);
    // IS NOT DISTINCT FROM: a null key is a key like any other, as in the GROUP BY.
    let on: Vec<Expr> = contract
        .unique
        .iter()
        .map(|k| binary_expr(ident(dup_key(k)), Operator::IsNotDistinctFrom, ident(k)))
        .collect();
    // The duplicated keys are the small side: they build the hash table, the rows probe it.
    let candidates = duplicated.join_on(good.select(narrow)?, JoinType::RightSemi, on)?;
    let losers = match contract.on_duplicate {
        OnDuplicate::QuarantineAll => candidates,
        policy => {
            let asc = policy == OnDuplicate::KeepFirst;
            let mut order = Vec::new();
            if let Some(k) = &contract.duplicate_order_by {
                order.push(ident(k).sort(asc, !asc));
            }
            order.extend(
                [ident(reader::SOURCE_FILE), ident(reader::LINE_NUMBER)]
                    .into_iter()
                    .map(|e| e.sort(asc, false)),
            );
            let rank = row_number()
                .partition_by(keys)
                .order_by(order)
                .build()?
                .alias("__dup_rank");
            candidates
                .window(vec![rank])?
                .filter(ident("__dup_rank").gt(lit(1u64)))?
        }
    };
    losers.select(vec![
        ident(reader::SOURCE_FILE).alias(DUP_FILE),
        ident(reader::LINE_NUMBER).alias(DUP_LINE),
    ])
}

/// The rows listed by [`duplicate_rows`], flagged `duplicate_key`, with the columns of
/// `rows`. The losers (usually none) build the join's hash table; with none, the rows are not
/// even read.
pub fn duplicates_flagged(
    rows: DataFrame,
    losers: DataFrame,
    contract: &Contract,
) -> DfResult<DataFrame> {
    let names: Vec<Expr> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .collect();
    let joined = losers.join(
        rows,
        JoinType::Inner,
        &[DUP_FILE, DUP_LINE],
        &[reader::SOURCE_FILE, reader::LINE_NUMBER],
        None,
    )?;
    let keys = contract.unique.join(", ");
    let message = format!(
        "another row has the same {keys}; the {} is kept",
        match contract.on_duplicate {
            OnDuplicate::KeepFirst => "first",
            OnDuplicate::KeepLast => "last",
            OnDuplicate::QuarantineAll => "none",
        }
    );
    replace_problem(
        joined,
        lit(true),
        lit("duplicate_key"),
        lit(contract.unique[0].clone()),
        concat(vec![
            lit(format!("{keys} '")),
            key_text(&contract.unique),
            lit(format!("': {message}")),
        ]),
    )?
    .select(names)
}

/// `rows` less the rows listed by [`duplicate_rows`].
pub fn without_duplicates(rows: DataFrame, losers: DataFrame) -> DfResult<DataFrame> {
    losers.join(
        rows,
        JoinType::RightAnti,
        &[DUP_FILE, DUP_LINE],
        &[reader::SOURCE_FILE, reader::LINE_NUMBER],
        None,
    )
}

/// Flags good rows whose key has no match in `target` (a foreign key), with `reason`.
pub fn check_reference(
    df: DataFrame,
    target: DataFrame,
    columns: &[String],
    reason: &str,
    table: &str,
) -> DfResult<DataFrame> {
    flag_by_lookup(
        df,
        target,
        columns,
        Lookup::FlagMissing,
        reason,
        &format!("' has no match in `{table}`"),
    )
}

/// Flags good rows whose key is already in `loaded` (rows an earlier run published to
/// staging) as `duplicate_key`: in an incremental load the rows already published win.
pub fn check_already_loaded(
    df: DataFrame,
    loaded: DataFrame,
    columns: &[String],
) -> DfResult<DataFrame> {
    flag_by_lookup(
        df,
        loaded,
        columns,
        Lookup::FlagFound,
        "duplicate_key",
        "' is already in staging, loaded from an earlier file",
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Lookup {
    FlagMissing,
    FlagFound,
}

/// An outer join on `columns` to the distinct keys of `target`, flagging good rows with a key
/// set whose match is missing (or found).
fn flag_by_lookup(
    df: DataFrame,
    target: DataFrame,
    columns: &[String],
    lookup: Lookup,
    reason: &str,
    message_end: &str,
) -> DfResult<DataFrame> {
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let alias = |c: &String| format!("__ref_{c}");
    let right = target
        .select(
            columns
                .iter()
                .map(|c| ident(c).alias(alias(c)))
                .collect::<Vec<Expr>>(),
        )?
        .distinct()?;
    let left_keys: Vec<&str> = columns.iter().map(String::as_str).collect();
    let right_names: Vec<String> = columns.iter().map(alias).collect();
    let right_keys: Vec<&str> = right_names.iter().map(String::as_str).collect();
    // DataFusion builds its hash table from the join's left input. A referenced table (the
    // customers an order points to) is usually far smaller than the rows checked, so it is the
    // left input; rows already in staging usually outnumber a new drop, so there the rows are.
    let joined = match lookup {
        Lookup::FlagMissing => right.join(df, JoinType::Right, &right_keys, &left_keys, None)?,
        Lookup::FlagFound => df.join(right, JoinType::Left, &left_keys, &right_keys, None)?,
    };
    let some_key_set = columns
        .iter()
        .map(|c| ident(c).is_not_null())
        .reduce(|a, b| a.and(b))
        .expect("lookups have columns");
    let matched = match lookup {
        Lookup::FlagMissing => ident(&right_names[0]).is_null(),
        Lookup::FlagFound => ident(&right_names[0]).is_not_null(),
    };
    let flagged = replace_problem(
        joined,
        ident(REASON).is_null().and(some_key_set).and(matched),
        lit(reason.to_string()),
        lit(columns[0].clone()),
        concat(vec![
            lit(format!("{} '", columns.join(", "))),
            key_text(columns),
            lit(message_end.to_string()),
        ]),
    )?;
    flagged.select(names.iter().map(ident).collect::<Vec<Expr>>())
}

/// A key's value as text for a message: the value of a one-column key, the column names of
/// a compound one.
fn key_text(columns: &[String]) -> Expr {
    if columns.len() == 1 {
        cast(ident(&columns[0]), DataType::Utf8)
    } else {
        lit(columns.join(", "))
    }
}

/// Sets `_reason`, `_column` and `_message` where `flagged`, keeping every other column.
fn replace_problem(
    df: DataFrame,
    flagged: Expr,
    reason: Expr,
    column: Expr,
    message: Expr,
) -> DfResult<DataFrame> {
    let exprs = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            let replacement = match name.as_str() {
                REASON => reason.clone(),
                COLUMN => column.clone(),
                MESSAGE => message.clone(),
                _ => return Ok(ident(name)),
            };
            // The cast keeps the column's type stable (a CASE over literals may widen it).
            when(flagged.clone(), replacement)
                .otherwise(ident(name))
                .map(|e| cast(e, f.data_type().clone()).alias(name))
        })
        .collect::<DfResult<Vec<_>>>()?;
    df.select(exprs)
}
