//! The quarantine: its rows with their raw text (read again by offset for CSV records), the
//! counts by reason, and the examples and hints a failed stage's message gives.

use std::collections::BTreeMap;
use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{Array, AsArray};
use segflow_core::datafusion::arrow::datatypes::{DataType, Int64Type};
use segflow_core::datafusion::functions_aggregate::expr_fn::count;
use segflow_core::datafusion::logical_expr::{ident, lit};
use segflow_core::stage::StageContext;
use segflow_core::{Error, Result};
use url::Url;

use crate::contract::Bound;
use crate::raw_text;
use crate::source;

use super::{FileIngest, QUARANTINE_COLUMNS};

impl FileIngest {
    /// Writes the quarantine from run table `found`, the bad rows with their place in the
    /// file: the rows whose text the row checks did not keep (found bad by a later check)
    /// get it read again from their files ([`crate::raw_text`]).
    pub(super) async fn quarantine_with_text(
        &self,
        cx: &StageContext<'_>,
        store: &Arc<dyn object_store::ObjectStore>,
        found: &str,
    ) -> Result<()> {
        use segflow_core::datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
        use segflow_core::datafusion::arrow::datatypes::{Field, Schema};
        use segflow_core::datafusion::common::JoinType;
        use segflow_core::datafusion::functions::expr_fn::coalesce;

        let err = |what: &str| cx.df_err(format!("{what} for `{}`", self.quarantine));
        let rows = cx.table(found).await?;
        let without_text = rows
            .clone()
            .filter(
                ident("raw_record")
                    .is_null()
                    .and(ident(source::RAW_OFFSET).is_not_null()),
            )
            .and_then(|d| {
                d.select(vec![
                    ident("source_file"),
                    ident(source::RAW_OFFSET),
                    ident(source::RAW_LENGTH),
                ])
            })
            .map_err(err("finding rows without text"))?
            .collect()
            .await
            .map_err(err("finding rows without text"))?;
        let mut places: BTreeMap<String, Vec<raw_text::At>> = BTreeMap::new();
        for b in &without_text {
            let (files, offsets, lengths) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                places
                    .entry(files.value(i).to_string())
                    .or_default()
                    .push((offsets.value(i) as u64, lengths.value(i) as u64));
            }
        }
        // Every row has its text now, kept or read again; the last, never-taken fallback
        // keeps the column non-null in the published schema, as it was before texts were
        // dropped early.
        let text = |read_again: Option<&str>| {
            let mut texts = vec![ident("raw_record")];
            texts.extend(read_again.map(ident));
            texts.push(lit(""));
            coalesce(texts).alias("raw_record")
        };
        let columns: Vec<_> = QUARANTINE_COLUMNS
            .iter()
            .map(|c| match *c {
                "raw_record" => text(None),
                c => ident(c),
            })
            .collect();
        if places.is_empty() {
            let table = rows.select(columns).map_err(err("selecting rows"))?;
            cx.materialize(&self.quarantine, table).await?;
            return Ok(());
        }
        let (mut files, mut offsets, mut texts) = (Vec::new(), Vec::new(), Vec::new());
        for (file, at) in places {
            let url = Url::parse(&file).map_err(|e| Error::Internal(format!("{file}: {e}")))?;
            let read = raw_text::read(store, &url, self.compression_of(&url), at)
                .await
                .map_err(|e| self.bad_data(e))?;
            for (offset, text) in read {
                files.push(file.clone());
                offsets.push(offset as i64);
                texts.push(text);
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("__text_file", DataType::Utf8, false),
            Field::new("__text_offset", DataType::Int64, false),
            Field::new("__text", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(files)),
                Arc::new(Int64Array::from(offsets)),
                Arc::new(StringArray::from(texts)),
            ],
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        let texts = cx.ctx.read_batch(batch).map_err(err("reading texts"))?;
        let columns: Vec<_> = QUARANTINE_COLUMNS
            .iter()
            .map(|c| match *c {
                "raw_record" => text(Some("__text")),
                c => ident(c),
            })
            .collect();
        // The texts read again are the small side of the join, its build side.
        let table = texts
            .join(
                rows,
                JoinType::Right,
                &["__text_file", "__text_offset"],
                &["source_file", source::RAW_OFFSET],
                None,
            )
            .and_then(|d| d.select(columns))
            .map_err(err("adding the texts read again"))?;
        cx.materialize(&self.quarantine, table).await?;
        Ok(())
    }

    /// Quarantined rows per reason, from this run's quarantine table.
    pub(super) async fn count_by_reason(
        &self,
        cx: &StageContext<'_>,
    ) -> Result<BTreeMap<String, u64>> {
        self.quarantine_counts(cx, "reason", None).await
    }

    /// Rows of this run's quarantine table per value of `column` (nulls left out), only the
    /// rows of reason `only` when given.
    pub(super) async fn quarantine_counts(
        &self,
        cx: &StageContext<'_>,
        column: &str,
        only: Option<&str>,
    ) -> Result<BTreeMap<String, u64>> {
        let context = format!("counting quarantined rows by {column}");
        let mut rows = cx.table(&self.quarantine).await?;
        if let Some(reason) = only {
            rows = rows
                .filter(ident("reason").eq(lit(reason)))
                .map_err(cx.df_err(context.clone()))?;
        }
        let batches = rows
            .aggregate(vec![ident(column)], vec![count(lit(1)).alias("n")])
            .map_err(cx.df_err(context.clone()))?
            .collect()
            .await
            .map_err(cx.df_err(context))?;
        let mut out = BTreeMap::new();
        for b in batches {
            let values = b.column(0).as_string::<i32>();
            let counts = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                if values.is_valid(i) {
                    out.insert(values.value(i).to_string(), counts.value(i) as u64);
                }
            }
        }
        Ok(out)
    }

    /// For a failure with `out_of_range` rows: per column, how many rows its contract bounds
    /// rejected and what the bounds are, naming the contract file, so that a bound real data
    /// crosses (old orders before a `min`, say) is widened there rather than hidden behind a
    /// higher `max_bad_fraction`.
    pub(super) async fn range_hint(
        &self,
        cx: &StageContext<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<String> {
        let rejected = self
            .quarantine_counts(cx, "column_name", Some("out_of_range"))
            .await?;
        let mut lines = String::new();
        // Contract order, so the hint reads like the contract file.
        for c in &self.contract.columns {
            let Some(n) = rejected.get(&c.name) else {
                continue;
            };
            let bound = |b: &Option<Bound>, word: &str| {
                b.as_ref().map(|b| {
                    let text = b.as_text(&c.data_type, now);
                    match b {
                        Bound::Text(t) if t == "now" => format!("{word} now ({text})"),
                        _ => format!("{word} {text}"),
                    }
                })
            };
            let bounds: Vec<String> = [bound(&c.min, "min"), bound(&c.max, "max")]
                .into_iter()
                .flatten()
                .collect();
            lines.push_str(&format!(
                "{n} rows have `{}` outside its range ({}) in the contract {}: if such values are real, widen or remove the bound there\n",
                c.name,
                bounds.join(", "),
                self.contract.file.display(),
            ));
        }
        Ok(lines)
    }

    /// `file:line: column `c`: message` for the first few quarantined rows, in file order.
    pub(super) async fn examples(&self, cx: &StageContext<'_>) -> Result<String> {
        let batches = cx
            .table(&self.quarantine)
            .await?
            .sort(vec![
                ident("source_file").sort(true, false),
                ident("line_number").sort(true, false),
            ])
            .and_then(|df| df.limit(0, Some(5)))
            .and_then(|df| {
                df.select(vec![
                    ident("source_file"),
                    ident("line_number"),
                    ident("column_name"),
                    ident("reason"),
                    ident("message"),
                ])
            })
            .map_err(cx.df_err("listing quarantined rows"))?
            .collect()
            .await
            .map_err(cx.df_err("listing quarantined rows"))?;
        let mut lines = Vec::new();
        for b in batches {
            let file = b.column(0).as_string::<i32>();
            let line = b.column(1).as_primitive::<Int64Type>();
            let column = b.column(2).as_string::<i32>();
            let reason = b.column(3).as_string::<i32>();
            let message = b.column(4).as_string::<i32>();
            for i in 0..b.num_rows() {
                let path = Url::parse(file.value(i))
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| file.value(i).to_string());
                let column = if column.is_valid(i) {
                    format!(" column `{}`:", column.value(i))
                } else {
                    String::new()
                };
                lines.push(format!(
                    "  {path}:{}:{column} {} ({})",
                    line.value(i),
                    message.value(i),
                    reason.value(i)
                ));
            }
        }
        Ok(lines.join("\n"))
    }
}

pub(super) fn reasons_text(by_reason: &BTreeMap<String, u64>) -> String {
    by_reason
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
