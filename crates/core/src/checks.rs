//! Data tests on a stage's output, run as soon as the stage finishes so that bad data never
//! reaches the next stage. Each check is a DataFusion query built with the DataFrame API
//! (column names and values are never spliced into SQL text). A failure reports how many rows
//! broke the rule and a few of them.

use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, col, lit, not};
use datafusion::prelude::DataFrame;

use crate::error::{Error, Result};
use crate::spec::CheckSpec;
use crate::stage::StageContext;

/// How many offending values a failure message shows.
const SAMPLE: usize = 5;

/// Outcome of one check, for the manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    pub check: String,
    pub passed: bool,
}

pub async fn run_checks(
    cx: &StageContext<'_>,
    table: &str,
    checks: &[CheckSpec],
) -> Result<Vec<CheckReport>> {
    let mut reports = Vec::with_capacity(checks.len());
    for check in checks {
        let started = std::time::Instant::now();
        let outcome = run_check(cx, table, check).await?;
        tracing::debug!(
            stage = cx.stage_id,
            table,
            check = %check.name(),
            ms = started.elapsed().as_millis() as u64,
            "check run"
        );
        match outcome {
            None => reports.push(CheckReport {
                check: check.name(),
                passed: true,
            }),
            Some(message) => {
                return Err(Error::CheckFailed {
                    stage: cx.stage_id.to_string(),
                    table: table.to_string(),
                    check: check.name(),
                    message,
                });
            }
        }
    }
    Ok(reports)
}

/// `None` when the check passes, else what failed.
async fn run_check(
    cx: &StageContext<'_>,
    table: &str,
    check: &CheckSpec,
) -> Result<Option<String>> {
    let df = cx.table(table).await?;
    let ctx_err = |what: &str| cx.df_err(format!("check {} on `{table}`: {what}", check.name()));
    let columns = |cols: &[String]| -> Result<Vec<Expr>> {
        cols.iter()
            .map(|c| {
                df.schema()
                    .index_of_column_by_name(None, c)
                    .map(|_| ident(c))
                    .ok_or_else(|| unknown_column(cx, table, check, c, &df))
            })
            .collect()
    };
    match check {
        CheckSpec::Unique(cols) => {
            let keys = columns(cols)?;
            let dups = df
                .aggregate(keys, vec![count(lit(1)).alias("n")])
                .map_err(ctx_err("grouping"))?
                .filter(col("n").gt(lit(1)))
                .map_err(ctx_err("filtering"))?;
            let total = dups.clone().count().await.map_err(ctx_err("counting"))?;
            if total == 0 {
                return Ok(None);
            }
            let sample = sample_rows(dups, ctx_err("sampling")).await?;
            Ok(Some(format!(
                "{total} value(s) of ({}) occur more than once, e.g. {sample}",
                cols.join(", ")
            )))
        }
        CheckSpec::NotNull(cols) => {
            let exprs = columns(cols)?;
            let mut bad = Vec::new();
            for (name, e) in cols.iter().zip(exprs) {
                let n = df
                    .clone()
                    .filter(e.is_null())
                    .map_err(ctx_err("filtering"))?
                    .count()
                    .await
                    .map_err(ctx_err("counting"))?;
                if n > 0 {
                    bad.push(format!("`{name}` is null in {n} row(s)"));
                }
            }
            Ok((!bad.is_empty()).then(|| bad.join("; ")))
        }
        CheckSpec::AcceptedValues { column, values } => {
            let e = columns(std::slice::from_ref(column))?.remove(0);
            let list = values.iter().map(|v| lit(v.as_str())).collect();
            let bad = df
                .filter(e.clone().is_not_null().and(e.clone().in_list(list, true)))
                .map_err(ctx_err("filtering"))?;
            let n = bad.clone().count().await.map_err(ctx_err("counting"))?;
            if n == 0 {
                return Ok(None);
            }
            let found = bad
                .aggregate(vec![e], vec![])
                .and_then(|d| d.limit(0, Some(SAMPLE)))
                .map_err(ctx_err("sampling"))?;
            let found = sample_rows(found, ctx_err("sampling")).await?;
            Ok(Some(format!(
                "{n} row(s) have a `{column}` outside [{}]: {found}",
                values.join(", ")
            )))
        }
        CheckSpec::RowCountEquals(other) => {
            let ours = cx.rows_of(table);
            let theirs = cx.rows_of(other).ok_or_else(|| Error::CheckFailed {
                stage: cx.stage_id.to_string(),
                table: table.to_string(),
                check: check.name(),
                message: format!(
                    "`{other}` is not a table of this run, or is not produced before this stage"
                ),
            })?;
            match ours {
                Some(n) if n == theirs => Ok(None),
                Some(n) => Ok(Some(format!(
                    "`{table}` has {n} rows, `{other}` has {theirs}"
                ))),
                None => Err(crate::table::TableInfo::missing(cx.stage_id, table)),
            }
        }
        CheckSpec::ExpressionIsTrue(sql) => {
            let e = df
                .parse_sql_expr(sql)
                .map_err(ctx_err("parsing the expression"))?;
            let bad = df.filter(not(e)).map_err(ctx_err("filtering"))?;
            let n = bad.clone().count().await.map_err(ctx_err("counting"))?;
            if n == 0 {
                return Ok(None);
            }
            let sample = sample_rows(bad, ctx_err("sampling")).await?;
            Ok(Some(format!("{n} row(s) where it is false, e.g. {sample}")))
        }
    }
}

/// A column reference that keeps the name's case (unlike `col("Name")`, which also is exact,
/// but this makes the intent explicit and handles dots in names).
fn ident(name: &str) -> Expr {
    datafusion::logical_expr::ident(name)
}

fn unknown_column(
    cx: &StageContext<'_>,
    table: &str,
    check: &CheckSpec,
    column: &str,
    df: &DataFrame,
) -> Error {
    let have: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    Error::CheckFailed {
        stage: cx.stage_id.to_string(),
        table: table.to_string(),
        check: check.name(),
        message: format!("no column `{column}`; the columns are {}", have.join(", ")),
    }
}

async fn sample_rows(
    df: DataFrame,
    err: impl FnOnce(datafusion::error::DataFusionError) -> Error,
) -> Result<String> {
    let batches = match df.limit(0, Some(SAMPLE)) {
        Ok(d) => d.collect().await,
        Err(e) => Err(e),
    }
    .map_err(err)?;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(format!("\n{text}"))
}
