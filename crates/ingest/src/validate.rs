//! The checks of an ingest's rows that look beyond one row: duplicate keys, keys already in
//! staging, foreign keys. The rows come typed and checked row by row from the reader
//! ([`crate::row_checks`]) with `_reason`, `_column` and `_message` (null for a good row);
//! these checks flag good rows only, so a row's first problem is the one reported.
//!
//! Reason codes (stable; documented in docs/input-contract.md, "Quarantine"): `duplicate_key`, and each
//! reference's own code (e.g. `unknown_customer`).

use std::sync::Arc;

use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::common::JoinType;
use segflow_core::datafusion::error::Result as DfResult;
use segflow_core::datafusion::functions::expr_fn::concat;
use segflow_core::datafusion::functions_aggregate::expr_fn::count;
use segflow_core::datafusion::functions_window::expr_fn::row_number;
use segflow_core::datafusion::logical_expr::{
    Expr, ExprFunctionExt, Operator, binary_expr, cast, ident, lit, when,
};
use segflow_core::datafusion::prelude::{DataFrame, SessionContext};

use crate::contract::{Contract, OnDuplicate};
use crate::key_hash::KeyHash;
use crate::key_set::KeySet;
use crate::source;

pub const REASON: &str = "_reason";
pub const COLUMN: &str = "_column";
pub const MESSAGE: &str = "_message";

/// How a contract column is read from its text.
#[derive(Debug, Clone)]
pub struct Parse {
    /// A chrono format for dates and timestamps (`%d/%m/%Y %H:%M`); ISO 8601 when unset.
    pub format: Option<String>,
}

const DUP_FILE: &str = "__dup_file";
const DUP_LINE: &str = "__dup_line";

const HASH: &str = "__key_hash";
const REPEATED_HASH: &str = "__repeated_hash";

fn dup_key(column: &str) -> String {
    format!("__dup_key_{column}")
}

/// The key hashes ([`KeyHash`]) that more than one of the `good` rows (those no other check
/// flagged) has, sorted: the duplicated keys' hashes and the rare collisions, usually none.
///
/// In this process (`distributed` false) the hashes are collected (8 bytes a row) and sorted
/// in memory, where DataFusion's hash aggregate had grown a table over every key: 1.5 s of an
/// orders ingest at M. On a cluster, where collecting every row's hash would funnel the whole
/// table through this process, a GROUP BY over the hashes runs on the executors and only
/// the repeated ones come back.
pub async fn repeated_key_hashes(
    good: DataFrame,
    contract: &Contract,
    distributed: bool,
) -> DfResult<Vec<u64>> {
    use segflow_core::datafusion::arrow::array::AsArray;
    use segflow_core::datafusion::arrow::datatypes::UInt64Type;
    if contract.unique.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<Expr> = contract.unique.iter().map(ident).collect();
    let hashes = good.select(vec![KeyHash::call(keys).alias(HASH)])?;
    if distributed {
        let batches = hashes
            .aggregate(vec![ident(HASH)], vec![count(lit(1)).alias("n")])?
            .filter(ident("n").gt(lit(1i64)))?
            .select(vec![ident(HASH)])?
            .collect()
            .await?;
        let mut repeated: Vec<u64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<UInt64Type>().values().to_vec())
            .collect();
        repeated.sort_unstable();
        return Ok(repeated);
    }
    let batches = hashes.collect().await?;
    let mut hashes = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for b in batches {
        hashes.extend_from_slice(b.column(0).as_primitive::<UInt64Type>().values());
    }
    tokio::task::spawn_blocking(move || repeated(hashes))
        .await
        .map_err(|e| segflow_core::datafusion::error::DataFusionError::External(Box::new(e)))
}

/// The values that occur more than once in `values`, sorted. The values are hashes, spread
/// evenly: one counting pass puts them in 65,536 buckets by their top bits, and each bucket,
/// a few hundred values that fit in cache, is sorted on its own.
pub(crate) fn repeated(values: Vec<u64>) -> Vec<u64> {
    const BITS: u32 = 16;
    let bucket = |v: u64| (v >> (64 - BITS)) as usize;
    let mut starts = vec![0usize; (1 << BITS) + 1];
    for v in &values {
        starts[bucket(*v) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut sorted = vec![0u64; values.len()];
    let mut next = starts.clone();
    for v in values {
        let b = bucket(v);
        sorted[next[b]] = v;
        next[b] += 1;
    }
    let mut out = Vec::new();
    for w in starts.windows(2) {
        let part = &mut sorted[w[0]..w[1]];
        part.sort_unstable();
        for pair in part.windows(2) {
            if pair[0] == pair[1] && out.last() != Some(&pair[0]) {
                out.push(pair[0]);
            }
        }
    }
    out
}

/// The keys that more than one of the `good` rows has, as `__dup_key_<column>` columns, from
/// the `repeated` key hashes ([`repeated_key_hashes`]); `None` when there are none (or the
/// contract has no `unique` keys). Hashes can collide, so the exact keys are counted among
/// the rows whose hash repeats.
pub fn duplicated_keys(
    ctx: &SessionContext,
    good: DataFrame,
    repeated: Vec<u64>,
    contract: &Contract,
) -> DfResult<Option<DataFrame>> {
    use segflow_core::datafusion::arrow::array::{RecordBatch, UInt64Array};
    if contract.unique.is_empty() || repeated.is_empty() {
        return Ok(None);
    }
    let keys: Vec<Expr> = contract.unique.iter().map(ident).collect();
    let hash = || KeyHash::call(keys.clone());
    let repeated = ctx.read_batch(RecordBatch::try_from_iter([(
        REPEATED_HASH,
        Arc::new(UInt64Array::from(repeated)) as _,
    )])?)?;
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
    narrow.extend([ident(source::SOURCE_FILE), ident(source::LINE_NUMBER)]);
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
                [ident(source::SOURCE_FILE), ident(source::LINE_NUMBER)]
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
        ident(source::SOURCE_FILE).alias(DUP_FILE),
        ident(source::LINE_NUMBER).alias(DUP_LINE),
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
        &[source::SOURCE_FILE, source::LINE_NUMBER],
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
        &[source::SOURCE_FILE, source::LINE_NUMBER],
        None,
    )
}

/// Flags good rows whose key (all of `columns` set) is not in `keys`, the keys of `table`
/// (a foreign key), with `reason`.
pub fn check_reference(
    df: DataFrame,
    keys: &Arc<KeySet>,
    columns: &[String],
    reason: &str,
    table: &str,
) -> DfResult<DataFrame> {
    let found = keys.call(table, columns.iter().map(ident).collect());
    replace_problem(
        df,
        ident(REASON).is_null().and(found.is_false()),
        lit(reason.to_string()),
        lit(columns[0].clone()),
        concat(vec![
            lit(format!("{} '", columns.join(", "))),
            key_text(columns),
            lit(format!("' has no match in `{table}`")),
        ]),
    )
}

/// [`check_reference`] as a join: good rows whose key (all of `columns` set) has no row in
/// `target` (the referenced table's key columns, cast to the rows' types) get `reason`. The
/// distinct keys are the join's build side (the left, collected whole or partitioned) and the
/// rows stream past them as the right side, so every row comes out once whichever way a
/// distributed engine cuts the join.
pub fn check_reference_by_join(
    df: DataFrame,
    target: DataFrame,
    columns: &[String],
    reason: &str,
    table: &str,
) -> DfResult<DataFrame> {
    let names = column_names(&df);
    let (keys, key_names) = distinct_keys(target, columns)?;
    let left: Vec<&str> = key_names.iter().map(String::as_str).collect();
    let right: Vec<&str> = columns.iter().map(String::as_str).collect();
    let joined = keys.join(df, JoinType::Right, &left, &right, None)?;
    let unmatched = ident(&key_names[0]).is_null();
    flag_joined(
        joined,
        &names,
        columns,
        reason,
        unmatched,
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
        "duplicate_key",
        "' is already in staging, loaded from an earlier file",
    )
}

/// An outer join on `columns` to the distinct keys of `target`, flagging good rows with a key
/// set that has a match. Rows already in staging usually outnumber a new drop, so the join
/// builds its hash table from the rows, not from a set of staging's keys.
fn flag_by_lookup(
    df: DataFrame,
    target: DataFrame,
    columns: &[String],
    reason: &str,
    message_end: &str,
) -> DfResult<DataFrame> {
    let names = column_names(&df);
    let (right, right_names) = distinct_keys(target, columns)?;
    let left_keys: Vec<&str> = columns.iter().map(String::as_str).collect();
    let right_keys: Vec<&str> = right_names.iter().map(String::as_str).collect();
    // DataFusion builds its hash table from the join's left input: the rows.
    let joined = df.join(right, JoinType::Left, &left_keys, &right_keys, None)?;
    let matched = ident(&right_names[0]).is_not_null();
    flag_joined(joined, &names, columns, reason, matched, message_end)
}

fn column_names(df: &DataFrame) -> Vec<String> {
    df.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// The distinct values of `columns` in `target`, renamed `__ref_<column>` so that they can
/// be joined to rows with the same column names, and those names.
fn distinct_keys(target: DataFrame, columns: &[String]) -> DfResult<(DataFrame, Vec<String>)> {
    let alias = |c: &String| format!("__ref_{c}");
    let keys = target
        .select(
            columns
                .iter()
                .map(|c| ident(c).alias(alias(c)))
                .collect::<Vec<Expr>>(),
        )?
        .distinct()?;
    Ok((keys, columns.iter().map(alias).collect()))
}

/// In the rows of a join to [`distinct_keys`], flags good rows with every key column set
/// where `when` holds, with the message `<columns> '<key>` + `message_end`, and keeps the
/// rows' own columns `names`.
fn flag_joined(
    joined: DataFrame,
    names: &[String],
    columns: &[String],
    reason: &str,
    when: Expr,
    message_end: &str,
) -> DfResult<DataFrame> {
    let every_key_set = columns
        .iter()
        .map(|c| ident(c).is_not_null())
        .reduce(|a, b| a.and(b))
        .expect("key checks have columns");
    let flagged = replace_problem(
        joined,
        ident(REASON).is_null().and(every_key_set).and(when),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_are_found_once_each_in_order() {
        // Values in the same bucket and in others; one three times.
        let top = |b: u64, low: u64| (b << 48) | low;
        let values = vec![
            top(7, 1),
            top(2, 5),
            top(7, 1),
            top(7, 2),
            top(2, 5),
            top(2, 5),
            u64::MAX,
            0,
            u64::MAX,
            top(9, 3),
        ];
        assert_eq!(
            repeated(values),
            vec![top(2, 5), top(7, 1), u64::MAX],
            "sorted, each once"
        );
        assert!(repeated(Vec::new()).is_empty());
        assert!(
            repeated(
                (0..100_000u64)
                    .map(|v| v.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                    .collect()
            )
            .is_empty()
        );
    }
}
