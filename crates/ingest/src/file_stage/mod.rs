//! `ingest.csv`, `ingest.ndjson`, `ingest.parquet`: source files to a typed run table, checked
//! against its contract, with every row that breaks the contract moved to a quarantine table
//! instead of failing the run or being dropped. The three kinds are one stage type; only the
//! reader differs.
//!
//! ```text
//!  files (one, a glob, or a prefix; CSV and NDJSON also gzip/bzip2/xz/zstd)
//!    └─ reader: typed columns + file, line, the record's offset, its first problem
//!       │  (types, required, accepted values, ranges: row_checks.rs; one reader per format,
//!       │  in one leaf plan: source/). A CSV record's text is not kept: the quarantine
//!       │  reads it again.
//!        └─ foreign keys (a set of the referenced keys: key_set.rs),
//!           keys already in staging (a join)                          (validate.rs)
//!            └─ one pass, two tables:
//!               ├─ good rows ─> <output>  (written into staging's Delta table on a first load;
//!               │                <output>__new, which staging adds, on an incremental one),
//!               │                their key hashes collected on the way
//!               └─ bad rows  ─> <output>__bad
//!                   └─ <quarantine>  (the bad rows decide whether the run goes on; a CSV
//!                                     record's text is read again by offset: raw_text.rs)
//! ```
//! Only when two good rows share a key (the hashes repeat and the exact keys do too) is the
//! one pass's output deleted and the rows taken the long way: all of them written as run
//! table `<output>__rows`, the copies of each duplicated key ordered (`on_duplicate`), the
//! losers quarantined as `duplicate_key` and the others written as the output.
//! Beyond `max_bad_fraction` / `max_bad_rows` the stage fails, so nothing is published.
//!
//! This module runs the steps; `config` is the YAML and how a stage is built from it,
//! `columns` finds the contract's columns in each file (and cuts large CSV files), `staging`
//! writes the good rows, and `quarantine` the bad ones and the stage's verdict on them.

mod columns;
mod config;
mod quarantine;
mod staging;

use std::sync::Arc;

use async_trait::async_trait;
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::logical_expr::{ident, lit};
use segflow_core::spec::CheckSpec;
use segflow_core::stage::{Stage, StageContext};
use segflow_core::{Error, Result, checks, storage};
use url::Url;

use crate::contract::Contract;
use crate::incremental;
use crate::key_set::KeySet;
use crate::row_checks::RowChecks;
use crate::source::{self, ExtraKeys, Format, IngestTable};
use crate::validate::{self, Parse};
use crate::wire::ChecksSource;

pub use config::{ColumnSource, ExtraColumns, IngestConfig};
pub(crate) use config::{IngestFactory, SourceFormat};
use quarantine::reasons_text;

/// A built `ingest.csv`, `ingest.ndjson` or `ingest.parquet` stage.
#[derive(Debug)]
pub struct FileIngest {
    id: String,
    url: Url,
    contract: Contract,
    format: Format,
    compression: Option<FileCompressionType>,
    /// Per contract column: the name to read it from (header, key or column).
    headers: Vec<String>,
    /// Per contract column: how to parse it.
    parses: Vec<Parse>,
    extra_columns: ExtraColumns,
    output: String,
    quarantine: String,
    max_bad_fraction: f64,
    max_bad_rows: Option<u64>,
    staging: Option<Url>,
    partition_by: Vec<(String, String)>,
    today: Option<chrono::DateTime<chrono::Utc>>,
}

/// The schema of every quarantine table (documented in docs/input-contract.md, "Quarantine").
pub const QUARANTINE_COLUMNS: [&str; 8] = [
    "run_id",
    "table_name",
    "source_file",
    "line_number",
    "column_name",
    "reason",
    "message",
    "raw_record",
];

impl FileIngest {
    fn bad_data(&self, message: String) -> Error {
        Error::BadData {
            stage: self.id.clone(),
            message,
        }
    }

    fn compression_of(&self, url: &Url) -> FileCompressionType {
        if let Some(c) = self.compression {
            return c;
        }
        let path = url.path();
        [
            (".gz", FileCompressionType::GZIP),
            (".bz2", FileCompressionType::BZIP2),
            (".xz", FileCompressionType::XZ),
            (".zst", FileCompressionType::ZSTD),
        ]
        .into_iter()
        .find(|(ext, _)| path.ends_with(ext))
        .map(|(_, c)| c)
        .unwrap_or(FileCompressionType::UNCOMPRESSED)
    }

    /// The key columns of the table reference `r` points to, cast to the types of the rows'
    /// columns, so that a key that has no value of that type matches no row.
    async fn reference_columns(
        &self,
        cx: &StageContext<'_>,
        rows: &segflow_core::datafusion::prelude::DataFrame,
        r: &crate::contract::Reference,
    ) -> Result<(segflow_core::datafusion::prelude::DataFrame, Vec<DataType>)> {
        use segflow_core::datafusion::logical_expr::try_cast;
        let err = || cx.df_err(format!("reading the keys of `{}`", r.table));
        let mut types = Vec::new();
        for c in &r.columns {
            let field = rows
                .schema()
                .field_with_unqualified_name(c)
                .map_err(err())?;
            types.push(field.data_type().clone());
        }
        let target = cx.table(&r.table).await?;
        let mut columns = Vec::new();
        for (c, t) in r.columns.iter().zip(&types) {
            if target.schema().field_with_unqualified_name(c).is_err() {
                return Err(self.bad_data(format!(
                    "{}: references `{}` by [{}], but `{}` has no column `{c}`",
                    self.contract.file.display(),
                    r.table,
                    r.columns.join(", "),
                    r.table
                )));
            }
            columns.push(try_cast(ident(c), t.clone()).alias(c));
        }
        Ok((target.select(columns).map_err(err())?, types))
    }

    /// The rows with those whose key has no match in the table reference `r` points to
    /// flagged. In this process the referenced keys become a set each row is looked up in
    /// ([`KeySet`]). On a cluster, where that set would travel inside every task's plan (tens
    /// of bytes a key: hundreds of megabytes at tens of millions of customers), the check is
    /// a join, which the cluster partitions like any other.
    async fn check_reference(
        &self,
        cx: &StageContext<'_>,
        rows: segflow_core::datafusion::prelude::DataFrame,
        r: &crate::contract::Reference,
    ) -> Result<segflow_core::datafusion::prelude::DataFrame> {
        let (target, types) = self.reference_columns(cx, &rows, r).await?;
        let err = || cx.df_err(format!("checking references to `{}`", r.table));
        if cx.engine().distributed {
            return validate::check_reference_by_join(
                rows, target, &r.columns, &r.reason, &r.table,
            )
            .map_err(err());
        }
        let batches = target
            .collect()
            .await
            .map_err(cx.df_err(format!("reading the keys of `{}`", r.table)))?;
        let keys = Arc::new(KeySet::new(types, &batches).map_err(err())?);
        cx.metric(
            &format!("{}_{}_keys", self.output, r.table),
            serde_json::json!(keys.len()),
        );
        validate::check_reference(rows, &keys, &r.columns, &r.reason, &r.table).map_err(err())
    }
}

#[async_trait]
impl Stage for FileIngest {
    fn inputs(&self) -> Vec<String> {
        let tables: std::collections::BTreeSet<String> = self
            .contract
            .references
            .iter()
            .map(|r| r.table.clone())
            .collect();
        tables.into_iter().collect()
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone(), self.quarantine.clone()]
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!("path: {} ({})", self.url, self.format.name()),
            format!("contract: {}", self.contract.file.display()),
            format!("quarantine: {}", self.quarantine),
        ];
        if let Some(url) = &self.staging {
            lines.push(format!("staging: {url} (incremental, delta)"));
        }
        lines
    }

    async fn fingerprint(
        &self,
        ctx: &segflow_core::datafusion::prelude::SessionContext,
        run: &segflow_core::stage::RunInfo,
        f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> Result<()> {
        f.add("contract", &self.contract.text);
        // Each input file by its URL, size and version tag (an object's ETag; a local file's
        // inode, size and modification time): a file replaced since is read again.
        for file in storage::list_files(ctx, &self.url).await? {
            f.add("file", file.url.as_str());
            f.add_json("size and tag", &(file.size, &file.e_tag))?;
        }
        // An incremental ingest adds to what staging holds at its current version.
        if let Some(url) = &self.staging {
            f.add_json(
                "staging version",
                &segflow_core::publish::latest_version(ctx, url).await?,
            )?;
        }
        // Bounds such as `max: today` are checked against the run's day unless `today:` fixes it.
        if self.today.is_none() {
            f.add("today", run.started_at.date_naive().to_string());
        }
        Ok(())
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        let files = storage::list_files(cx.ctx, &self.url).await?;
        if files.is_empty() {
            return Err(Error::InputNotFound {
                stage: self.id.clone(),
                url: self.url.to_string(),
            });
        }
        let published = match &self.staging {
            Some(url) if !cx.run.full_refresh => incremental::published(cx, url).await?,
            _ => None,
        };
        let (read, skipped) = match &published {
            Some(p) => incremental::to_read(&files, &p.ledger),
            None => (files.iter().collect(), 0),
        };
        cx.metric(
            &format!("{}_files_read", self.output),
            serde_json::json!(read.len()),
        );
        if self.staging.is_some() {
            cx.metric(
                &format!("{}_files_unchanged", self.output),
                serde_json::json!(skipped),
            );
        }
        // Staging rows from files this run reads again are replaced, so they do not count.
        let read_urls: Vec<String> = read.iter().map(|f| f.url.to_string()).collect();
        let kept = match &published {
            Some(p) => Some(
                p.rows
                    .clone()
                    .filter(
                        ident(incremental::SOURCE_FILE)
                            .in_list(read_urls.iter().map(|u| lit(u.clone())).collect(), true),
                    )
                    .map_err(cx.df_err("reading staging"))?,
            ),
            None => None,
        };

        let store = storage::store_for(cx.ctx, &self.url)?;
        let mut sources = Vec::new();
        for f in &read {
            sources.push(self.plan_file(cx, &store, f).await?);
        }
        cx.metric(
            &format!("{}_read_partitions", self.output),
            serde_json::json!(sources.iter().map(|s| s.pieces.len().max(1)).sum::<usize>()),
        );
        let names: Vec<String> = self
            .contract
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let checks_source = ChecksSource {
            contract: self.contract.clone(),
            parses: self.parses.clone(),
            now: self.today.unwrap_or(cx.run.started_at),
            extra_keys_fail: self.extra_columns == ExtraColumns::Fail,
        };
        let checks = RowChecks::new(
            &checks_source.contract,
            &checks_source.parses,
            checks_source.now,
            source::meta_fields(),
        )
        .map_err(|m| self.bad_data(m))?;
        let extra_keys = ExtraKeys::new(checks_source.extra_keys_fail);
        let table = IngestTable::new(
            sources,
            self.format.clone(),
            Arc::new(checks),
            Arc::new(checks_source),
            extra_keys.clone(),
        );
        let mut rows = cx
            .ctx
            .read_table(Arc::new(table))
            .map_err(cx.df_err("reading the files"))?;
        if let Some(kept) = &kept
            && !self.contract.unique.is_empty()
        {
            rows = validate::check_already_loaded(rows, kept.clone(), &self.contract.unique)
                .map_err(cx.df_err("checking keys against staging"))?;
        }
        for r in &self.contract.references {
            rows = self.check_reference(cx, rows, r).await?;
        }
        // Usually one pass: the good rows are written as the output (into staging, for a first
        // load) and the bad ones as a run table, from the reader's one stream. Only when good
        // rows share a key do the rows go the long way (below), which orders the copies.
        let request = match (&self.staging, &kept) {
            (Some(url), None) => Some(self.staging_request(
                url,
                published.as_ref(),
                &read,
                self.output.clone(),
                None,
            )?),
            _ => None,
        };
        let one_pass = self
            .one_pass(cx, rows.clone(), &names, kept.is_some(), request.as_ref())
            .await?;
        for (file, keys) in extra_keys.take() {
            cx.warn(&format!(
                "{file}: ignoring keys the contract does not have: {}",
                keys.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let (rows_read, bad, good) = match one_pass {
            Some((rows_read, bad)) => (rows_read, bad, None),
            None => {
                let (rows_read, bad, good) = self.by_rows_table(cx, rows).await?;
                (rows_read, bad, Some(good))
            }
        };

        // The quarantine first: its rows decide whether the run may go on.
        let bad_rows = bad
            .select(vec![
                lit(cx.run.run_id.clone()).alias("run_id"),
                lit(self.output.clone()).alias("table_name"),
                source::source_file_text().alias("source_file"),
                ident(source::LINE_NUMBER).alias("line_number"),
                ident(validate::COLUMN).alias("column_name"),
                ident(validate::REASON).alias("reason"),
                ident(validate::MESSAGE).alias("message"),
                ident(source::RAW_RECORD).alias("raw_record"),
                ident(source::RAW_OFFSET),
                ident(source::RAW_LENGTH),
            ])
            .map_err(cx.df_err("selecting quarantined rows"))?;
        let found = format!("{}__found", self.quarantine);
        cx.materialize(&found, bad_rows).await?;
        self.quarantine_with_text(cx, &store, &found).await?;
        let by_reason = self.count_by_reason(cx).await?;
        let bad: u64 = by_reason.values().sum();
        cx.metric(
            &format!("{}_rows_read", self.output),
            serde_json::json!(rows_read),
        );
        cx.metric(
            &format!("{}_rows_accepted", self.output),
            serde_json::json!(rows_read - bad),
        );
        cx.metric(
            &format!("{}_rows_quarantined", self.output),
            serde_json::json!(bad),
        );
        cx.metric(
            &format!("{}_quarantined_by_reason", self.output),
            serde_json::json!(by_reason),
        );
        let fraction = if rows_read == 0 {
            0.0
        } else {
            bad as f64 / rows_read as f64
        };
        let over_rows = self.max_bad_rows.is_some_and(|m| bad > m);
        if fraction > self.max_bad_fraction || over_rows {
            if good.is_none() {
                // The one pass wrote the good rows before their count was known: into
                // staging, where no commit will name them now.
                let written = match &kept {
                    Some(_) => format!("{}__new", self.output),
                    None => self.output.clone(),
                };
                cx.discard(&written).await?;
            }
            let examples = self.examples(cx).await?;
            let ranges = if by_reason.contains_key("out_of_range") {
                let now = self.today.unwrap_or(cx.run.started_at);
                self.range_hint(cx, now).await?
            } else {
                String::new()
            };
            return Err(self.bad_data(format!(
                "{bad} of {rows_read} rows ({:.2}%) break the contract {}, over the limit ({}): {}\nfirst bad rows:\n{examples}\n{ranges}fix the files, or raise `max_bad_fraction` / `max_bad_rows` in stage `{}` to quarantine them and go on",
                fraction * 100.0,
                self.contract.file.display(),
                match self.max_bad_rows {
                    Some(m) if over_rows => format!("max_bad_rows {m}"),
                    _ => format!("max_bad_fraction {}", self.max_bad_fraction),
                },
                reasons_text(&by_reason),
                self.id
            )));
        }
        if bad > 0 {
            cx.warn(&format!(
                "quarantined {bad} of {rows_read} rows of `{}` in `{}`: {}",
                self.output,
                self.quarantine,
                reasons_text(&by_reason)
            ));
        }

        match (good, &self.staging) {
            (Some(good), None) => {
                let good = self.with_output_columns(cx, good, &names, true)?;
                cx.materialize(&self.output, good).await?;
            }
            (Some(good), Some(url)) => {
                let good = self.with_output_columns(cx, good, &names, true)?;
                self.load_staging(cx, url, good, kept, published, &read)
                    .await?;
            }
            // Written in the one pass.
            (None, None) => {}
            (None, Some(url)) => match kept {
                None => cx.publish(request.expect("a first load has its request")),
                Some(kept) => {
                    let new_name = format!("{}__new", self.output);
                    self.add_to_staging(cx, url, kept, &new_name, published, &read)
                        .await?;
                }
            },
        }
        // The contract's keys and values hold by construction now; checking the required
        // and accepted values on the result (one cheap scan each) guards that construction.
        // Not the keys: that is another GROUP BY over every key, the same as the key count
        // above (measured: 1.7 s of a 31 s ingest of 8.5M orders).
        let guards: Vec<_> = self
            .contract
            .checks()
            .into_iter()
            .filter(|c| !matches!(c, CheckSpec::Unique(_)))
            .collect();
        checks::run_checks(cx, &self.output, &guards)
            .await
            .map(|_| ())
    }
}
