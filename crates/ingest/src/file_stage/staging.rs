//! Writing the good rows: straight into staging's Delta table on a first load, as a run table
//! that staging adds on an incremental one; and the long way, when good rows share a key.

use std::sync::Arc;

use segflow_core::datafusion::logical_expr::ident;
use segflow_core::publish::{PublishMode, PublishRequest};
use segflow_core::stage::StageContext;
use segflow_core::storage::FileEntry;
use segflow_core::{Error, Result};
use url::Url;

use crate::incremental::{self, Ledger, Published};
use crate::source;
use crate::validate;

use super::FileIngest;

impl FileIngest {
    /// The publish request that writes `table` into staging at `url` with the ledger of the
    /// files read this run; `replace_where`: the files whose earlier rows it replaces.
    pub(super) fn staging_request(
        &self,
        url: &Url,
        published: Option<&Published>,
        read: &[&FileEntry],
        table: String,
        replace_where: Option<(String, Vec<String>)>,
    ) -> Result<PublishRequest> {
        let mut ledger: Ledger = published.map(|p| p.ledger.clone()).unwrap_or_default();
        for f in read {
            ledger.insert(f.url.to_string(), (*f).into());
        }
        let ledger = serde_json::to_value(&ledger).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(PublishRequest {
            table,
            name: Some(self.output.clone()),
            url: url.clone(),
            partition_by: self.partition_by.iter().map(|(n, _)| n.clone()).collect(),
            // A full load may change the schema (a contract gained a column); adding rows
            // to an existing table may not.
            allow_schema_change: replace_where.is_none(),
            mode: PublishMode::Overwrite,
            replace_where,
            commit_info: vec![(incremental::LEDGER_KEY.to_string(), ledger)],
        })
    }

    /// Builds the output from the published staging rows still current (`kept`) and this
    /// run's good rows, and asks for the one commit that adds those rows to staging with the
    /// new ledger.
    pub(super) async fn load_staging(
        &self,
        cx: &StageContext<'_>,
        url: &Url,
        good: segflow_core::datafusion::prelude::DataFrame,
        kept: Option<segflow_core::datafusion::prelude::DataFrame>,
        published: Option<Published>,
        read: &[&FileEntry],
    ) -> Result<()> {
        match kept {
            // A first load or a full refresh: the run's rows are the whole table, written
            // straight into it where it is not partitioned.
            None => {
                let request =
                    self.staging_request(url, published.as_ref(), read, self.output.clone(), None)?;
                cx.materialize_published(&self.output, good, &request)
                    .await?;
                cx.publish(request);
                Ok(())
            }
            Some(kept) => {
                let new_name = format!("{}__new", self.output);
                cx.materialize(&new_name, good).await?;
                self.add_to_staging(cx, url, kept, &new_name, published, read)
                    .await
            }
        }
    }

    /// The output of an incremental load: the staging rows still current (`kept`) and this
    /// run's good rows, run table `new_name`; and the request that adds those to staging.
    pub(super) async fn add_to_staging(
        &self,
        cx: &StageContext<'_>,
        url: &Url,
        kept: segflow_core::datafusion::prelude::DataFrame,
        new_name: &str,
        published: Option<Published>,
        read: &[&FileEntry],
    ) -> Result<()> {
        let new_rows = cx.table(new_name).await?;
        let columns: Vec<_> = new_rows
            .schema()
            .fields()
            .iter()
            .map(|f| ident(f.name()))
            .collect();
        let sorted_names = |df: &segflow_core::datafusion::prelude::DataFrame| {
            let mut names: Vec<String> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            names.sort_unstable();
            names
        };
        let (loaded, now) = (sorted_names(&kept), sorted_names(&new_rows));
        // Nullable columns added to the contract since staging was loaded (contract v1 only
        // adds columns) are added to it: the rows loaded before read null there, and the
        // commit merges them into the table's schema. Anything else (a column gone, a
        // required or `partition_by` column added) needs the rows read again.
        let added: Vec<&String> = now.iter().filter(|c| !loaded.contains(c)).collect();
        let nullable = |c: &str| {
            self.contract
                .columns
                .iter()
                .any(|k| k.name == c && k.nullable)
        };
        let addable = loaded.iter().all(|c| now.contains(c)) && added.iter().all(|c| nullable(c));
        let mut kept = kept;
        if addable {
            for c in added {
                let field = new_rows
                    .schema()
                    .field_with_unqualified_name(c)
                    .map_err(cx.df_err("adding a column to staging"))?;
                let null =
                    segflow_core::datafusion::common::ScalarValue::try_from(field.data_type())
                        .map_err(cx.df_err("adding a column to staging"))?;
                kept = kept
                    .with_column(c, segflow_core::datafusion::prelude::lit(null))
                    .map_err(cx.df_err("adding a column to staging"))?;
            }
        }
        let loaded = sorted_names(&kept);
        if loaded != now {
            return Err(self.bad_data(format!(
                "staging table {url} has the columns [{}], but the contract {} and `partition_by` now give [{}]; \
                 rerun with --full-refresh to rebuild staging with the new columns",
                loaded.join(", "),
                self.contract.file.display(),
                now.join(", ")
            )));
        }
        let all = kept
            .select(columns)
            .and_then(|k| k.union(new_rows.clone()))
            .map_err(cx.df_err("adding new rows to staging"))?;
        cx.materialize(&self.output, all).await?;
        if read.is_empty() {
            // Nothing new: staging stays at its version.
            return Ok(());
        }
        let files = read.iter().map(|f| f.url.to_string()).collect();
        cx.publish(self.staging_request(
            url,
            published.as_ref(),
            read,
            new_name.to_string(),
            Some((incremental::SOURCE_FILE.to_string(), files)),
        )?);
        Ok(())
    }

    /// `rows` with the output's columns that the contract's are not: the source file as
    /// text for staging, and the `partition_by` columns. `only`: only the output's columns.
    pub(super) fn with_output_columns(
        &self,
        cx: &StageContext<'_>,
        rows: segflow_core::datafusion::prelude::DataFrame,
        names: &[String],
        only: bool,
    ) -> Result<segflow_core::datafusion::prelude::DataFrame> {
        let mut rows = rows;
        if self.staging.is_some() {
            rows = rows
                .with_column(incremental::SOURCE_FILE, source::source_file_text())
                .map_err(cx.df_err("selecting good rows"))?;
        }
        if only {
            rows = rows
                .select(
                    self.output_columns(names)
                        .iter()
                        .map(ident)
                        .collect::<Vec<_>>(),
                )
                .map_err(cx.df_err("selecting good rows"))?;
        }
        for (name, sql) in &self.partition_by {
            let expr = rows.parse_sql_expr(sql).map_err(cx.df_err(format!(
                "`partition_by.{name}`: `{sql}` is not a valid SQL expression over the contract's columns"
            )))?;
            rows = rows
                .with_column(name, expr)
                .map_err(cx.df_err(format!("computing `partition_by.{name}`")))?;
        }
        Ok(rows)
    }

    /// The output's columns before `partition_by`'s: the contract's, then the source file
    /// for staging.
    pub(super) fn output_columns(&self, names: &[String]) -> Vec<String> {
        let mut columns = names.to_vec();
        if self.staging.is_some() {
            columns.push(incremental::SOURCE_FILE.to_string());
        }
        columns
    }

    /// Writes the good rows as the output (`__new` when `incremental`, for staging to add
    /// them) and the bad rows as run table `<output>__bad` in one pass over `rows`,
    /// collecting the good rows' key hashes on the way. `None` when good rows share a key:
    /// what was written is discarded, and the rows must go [`FileIngest::by_rows_table`].
    /// Else the rows read and the bad rows.
    pub(super) async fn one_pass(
        &self,
        cx: &StageContext<'_>,
        rows: segflow_core::datafusion::prelude::DataFrame,
        names: &[String],
        incremental: bool,
        request: Option<&PublishRequest>,
    ) -> Result<Option<(u64, segflow_core::datafusion::prelude::DataFrame)>> {
        use segflow_core::datafusion::arrow::array::AsArray;
        use segflow_core::datafusion::arrow::datatypes::UInt64Type;
        const GOOD: &str = "__good";
        const HASH: &str = "__key_hash";
        let row_columns: Vec<String> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut all = rows
            .with_column(GOOD, ident(validate::REASON).is_null())
            .map_err(cx.df_err("selecting good rows"))?;
        let unique = !self.contract.unique.is_empty();
        if unique {
            let keys = self.contract.unique.iter().map(ident).collect();
            all = all
                .with_column(HASH, crate::key_hash::KeyHash::call(keys))
                .map_err(cx.df_err("hashing keys"))?;
        }
        let all = self.with_output_columns(cx, all, names, false)?;
        let mut good_columns = self.output_columns(names);
        good_columns.extend(self.partition_by.iter().map(|(n, _)| n.clone()));
        let target = if incremental {
            format!("{}__new", self.output)
        } else {
            self.output.clone()
        };
        let hashes: Arc<std::sync::Mutex<Vec<u64>>> = Default::default();
        let observe = unique.then(|| {
            let hashes = hashes.clone();
            Arc::new(
                move |good: &segflow_core::datafusion::arrow::array::RecordBatch| {
                    let column = good
                        .column_by_name(HASH)
                        .ok_or_else(|| Error::Internal("the key hashes are missing".into()))?;
                    hashes
                        .lock()
                        .expect("hashes lock")
                        .extend_from_slice(column.as_primitive::<UInt64Type>().values());
                    Ok(())
                },
            ) as Arc<_>
        });
        let bad_name = format!("{}__bad", self.output);
        let split = segflow_core::table::Split {
            by: GOOD.into(),
            first: (target.clone(), good_columns),
            second: (bad_name.clone(), row_columns),
            observe,
        };
        let written = cx.materialize_split(all, split, request).await?;
        let hashes = std::mem::take(&mut *hashes.lock().expect("hashes lock"));
        let repeated = if written.observed {
            tokio::task::spawn_blocking(move || validate::repeated(hashes))
                .await
                .map_err(|e| Error::Internal(format!("sorting key hashes: {e}")))?
        } else {
            // The rows were written on a cluster, out of the observer's sight: count the
            // written keys there.
            validate::repeated_key_hashes(cx.table(&target).await?, &self.contract, true)
                .await
                .map_err(cx.df_err("counting keys"))?
        };
        // Hashes can collide: the exact keys decide.
        if let Some(duplicated) =
            validate::duplicated_keys(cx.ctx, cx.table(&target).await?, repeated, &self.contract)
                .map_err(cx.df_err("counting keys"))?
        {
            let keys_name = format!("{}__duplicated_keys", self.output);
            if cx.materialize(&keys_name, duplicated).await?.rows > 0 {
                cx.discard(&target).await?;
                return Ok(None);
            }
        }
        Ok(Some((
            written.first.rows + written.second.rows,
            cx.table(&bad_name).await?,
        )))
    }

    /// The long way, for rows some of whose keys repeat: every row written once as run table
    /// `<output>__rows`, then the duplicated keys' copies ordered, and the losers flagged. The
    /// rows read, the bad rows and the good ones.
    pub(super) async fn by_rows_table(
        &self,
        cx: &StageContext<'_>,
        rows: segflow_core::datafusion::prelude::DataFrame,
    ) -> Result<(
        u64,
        segflow_core::datafusion::prelude::DataFrame,
        segflow_core::datafusion::prelude::DataFrame,
    )> {
        let rows_name = format!("{}__rows", self.output);
        let rows_read = cx.materialize(&rows_name, rows).await?.rows;
        let rows = cx.table(&rows_name).await?;
        let mut good = rows
            .clone()
            .filter(ident(validate::REASON).is_null())
            .map_err(cx.df_err("selecting good rows"))?;
        // Parquet statistics skip the row groups without bad rows: usually all of them.
        let mut bad = rows
            .filter(ident(validate::REASON).is_not_null())
            .map_err(cx.df_err("selecting quarantined rows"))?;
        // Only rows that pass every other check compete for a key. The keys and the losing
        // rows are run tables so that their (exact) row counts let DataFusion build the joins'
        // hash tables from them, not from the rows.
        let repeated =
            validate::repeated_key_hashes(good.clone(), &self.contract, cx.engine().distributed)
                .await
                .map_err(cx.df_err("counting keys"))?;
        if let Some(duplicated) =
            validate::duplicated_keys(cx.ctx, good.clone(), repeated, &self.contract)
                .map_err(cx.df_err("counting keys"))?
        {
            let keys_name = format!("{}__duplicated_keys", self.output);
            cx.materialize(&keys_name, duplicated).await?;
            let losers =
                validate::duplicate_rows(good.clone(), cx.table(&keys_name).await?, &self.contract)
                    .map_err(cx.df_err("ordering duplicated keys"))?;
            let losers_name = format!("{}__duplicate_rows", self.output);
            cx.materialize(&losers_name, losers).await?;
            let losers = cx.table(&losers_name).await?;
            bad = validate::duplicates_flagged(good.clone(), losers.clone(), &self.contract)
                .and_then(|dups| bad.union(dups))
                .map_err(cx.df_err("flagging duplicate keys"))?;
            good = validate::without_duplicates(good, losers)
                .map_err(cx.df_err("flagging duplicate keys"))?;
        }
        Ok((rows_read, bad, good))
    }
}
