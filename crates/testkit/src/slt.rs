//! A sqllogictest driver over DataFusion, for golden tests of the `sql/` files.
//!
//! Besides plain SQL, a record may run one of the repository's SQL files:
//!
//! ```text
//! statement ok
//! model features/run_as_of.sql into run_as_of as_of=2026-01-01
//!
//! query TII rowsort
//! model features/customer_rfm.sql as_of=2026-01-01
//! ----
//! ...
//! ```
//!
//! `model FILE [into TABLE] [name=value ...]` reads `sql/FILE`, binds each `name=value` to the
//! query's `$name` (integers as BIGINT, everything else as text; `name=''` is the empty text),
//! and either returns the rows or, with `into`, stores them as a table for the next records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use segflow_core::datafusion::arrow::array::Array;
use segflow_core::datafusion::arrow::record_batch::RecordBatch;
use segflow_core::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use segflow_core::datafusion::common::ParamValues;
use segflow_core::datafusion::datasource::MemTable;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::datafusion::scalar::ScalarValue;
use segflow_core::sql::SqlFile;
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug, thiserror::Error)]
pub enum SltError {
    #[error("{0}")]
    DataFusion(#[from] segflow_core::datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] segflow_core::datafusion::arrow::error::ArrowError),
    #[error("{0}")]
    Segflow(#[from] segflow_core::Error),
    #[error("model statement: {0}")]
    Model(String),
}

/// One DataFusion session per `.slt` file.
pub struct Driver {
    ctx: SessionContext,
    sql_dir: PathBuf,
}

impl Driver {
    pub fn new(sql_dir: &Path) -> Self {
        Driver {
            ctx: SessionContext::new_with_config(
                segflow_core::datafusion::prelude::SessionConfig::new()
                    .with_information_schema(true),
            ),
            sql_dir: sql_dir.to_path_buf(),
        }
    }

    async fn model(&mut self, args: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let mut words = args.split_whitespace();
        let file = words
            .next()
            .ok_or_else(|| SltError::Model("needs a file".into()))?;
        let mut into = None;
        let mut params = std::collections::HashMap::new();
        while let Some(w) = words.next() {
            if w == "into" {
                into = Some(
                    words
                        .next()
                        .ok_or_else(|| SltError::Model("`into` needs a table".into()))?
                        .to_string(),
                );
            } else if let Some((k, v)) = w.split_once('=') {
                let v = v.trim_matches('\'');
                let value = match v.parse::<i64>() {
                    Ok(i) => ScalarValue::Int64(Some(i)),
                    Err(_) => ScalarValue::Utf8(Some(v.to_string())),
                };
                params.insert(k.to_string(), value);
            } else {
                return Err(SltError::Model(format!("`{w}` is not name=value")));
            }
        }
        let sql = SqlFile::load(&self.sql_dir, file)?;
        let missing: Vec<_> = sql
            .placeholders
            .iter()
            .filter(|p| !params.contains_key(*p))
            .collect();
        if !missing.is_empty() {
            return Err(SltError::Model(format!("{file} needs params {missing:?}")));
        }
        let mut df = self.ctx.sql(&sql.text).await?;
        if !params.is_empty() {
            df = df.with_param_values(ParamValues::from(params))?;
        }
        let batches = df.collect().await?;
        match into {
            Some(table) => {
                let schema = batches
                    .first()
                    .map(|b| b.schema())
                    .ok_or_else(|| SltError::Model("query returned no batches".into()))?;
                let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
                self.ctx.deregister_table(table.as_str())?;
                self.ctx.register_table(
                    table.as_str(),
                    Arc::new(MemTable::try_new(schema, vec![batches])?),
                )?;
                Ok(DBOutput::StatementComplete(n as u64))
            }
            None => Ok(to_output(&batches)?),
        }
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Driver {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let trimmed = sql.trim();
        if let Some(rest) = trimmed.strip_prefix("model ") {
            return self.model(rest).await;
        }
        let df = self.ctx.sql(trimmed).await?;
        let is_query = trimmed.to_ascii_lowercase().starts_with("select")
            || trimmed.to_ascii_lowercase().starts_with("with");
        let batches = df.collect().await?;
        if is_query {
            Ok(to_output(&batches)?)
        } else {
            Ok(DBOutput::StatementComplete(0))
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "datafusion"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn to_output(batches: &[RecordBatch]) -> Result<DBOutput<DefaultColumnType>, SltError> {
    let types = match batches.first() {
        Some(b) => b
            .schema()
            .fields()
            .iter()
            .map(|f| {
                use segflow_core::datafusion::arrow::datatypes::DataType::*;
                match f.data_type() {
                    Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => {
                        DefaultColumnType::Integer
                    }
                    Float16 | Float32 | Float64 | Decimal128(..) | Decimal256(..) => {
                        DefaultColumnType::FloatingPoint
                    }
                    _ => DefaultColumnType::Text,
                }
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(DBOutput::Rows {
        types,
        rows: format_rows(batches)?,
    })
}

/// Each value as text: `NULL` for null, `(empty)` for the empty string.
pub fn format_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            let row = formatters
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| {
                    let s = f.value(r).to_string();
                    if s.is_empty() && c.is_valid(r) {
                        "(empty)".to_string()
                    } else {
                        s
                    }
                })
                .collect();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Runs (or with `complete`, rewrites the expected output of) every `.slt` file under `dir`,
/// each in its own session. Returns the files that failed, with their errors.
pub async fn run_all(dir: &Path, sql_dir: &Path, complete: bool) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let mut failures = Vec::new();
    for file in &files {
        let sql_dir = sql_dir.to_path_buf();
        let mut runner = sqllogictest::Runner::new(move || {
            let sql_dir = sql_dir.clone();
            async move { Ok::<_, SltError>(Driver::new(&sql_dir)) }
        });
        let result = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(false).to_string())
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    (files.len(), failures)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "slt") {
            out.push(p);
        }
    }
}
