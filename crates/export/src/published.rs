//! The tables of one published run, for the exports that copy them out: the run pointer
//! (`<runs>/_published.json`, [`segflow_core::pointer`]) and each table at the Delta version it
//! names, so that every table an export writes comes from the same run.

use segflow_core::datafusion::prelude::{DataFrame, SessionContext};
use segflow_core::pointer::{Pointer, PointerTable};
use segflow_core::{Error, pointer, publish, storage};
use url::Url;

/// One run's published tables.
#[derive(Debug)]
pub struct Published {
    runs: Url,
    /// The pointer as read.
    pub pointer: Pointer,
}

/// One published table at its version.
pub struct Table {
    /// Its name in the pointer.
    pub name: String,
    /// Its location.
    pub url: Url,
    /// The version read.
    pub version: u64,
    /// The run that committed that version.
    pub run_id: String,
    /// Its rows at that version.
    pub rows: DataFrame,
    /// The Delta table's partition columns, and its data files (path relative to the table,
    /// partition values in that order) at this version.
    pub partition_by: Vec<String>,
    /// See `partition_by`.
    pub files: Vec<(String, Vec<Option<String>>)>,
}

impl Published {
    /// The run pointer under `runs` (a pipeline's `runs:` folder).
    pub async fn read(ctx: &SessionContext, runs: &Url) -> segflow_core::Result<Published> {
        match pointer::read(ctx, runs).await? {
            Some((pointer, _)) => Ok(Published {
                runs: runs.clone(),
                pointer,
            }),
            None => Err(Error::InputNotFound {
                stage: "export".into(),
                url: format!(
                    "{} (nothing is published there yet: run the pipeline first)",
                    pointer::location(runs)
                ),
            }),
        }
    }

    /// Where table `name` is and the version to read.
    pub fn entry(&self, name: &str) -> segflow_core::Result<&PointerTable> {
        self.pointer.tables.get(name).ok_or_else(|| Error::BadData {
            stage: "export".into(),
            message: format!(
                "{} names no table `{name}`; it has: {}",
                pointer::location(&self.runs),
                self.pointer
                    .tables
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Table `name` at the version the pointer names.
    pub async fn table(&self, ctx: &SessionContext, name: &str) -> segflow_core::Result<Table> {
        let entry = self.entry(name)?;
        let url = storage::parse_location(&entry.url)?;
        let delta = publish::open_table_at(ctx, &url, entry.version).await?;
        let (partition_by, files) = publish::active_files(&delta, &url).await?;
        let rows = publish::rows(ctx, &delta, &url).await?;
        Ok(Table {
            name: name.to_string(),
            url,
            version: entry.version,
            run_id: entry.run_id.clone(),
            rows,
            partition_by,
            files,
        })
    }
}

/// The data files of the Delta table at `url` at an earlier `version` (what an earlier sync
/// read), as [`Table::files`] lists them.
pub async fn files_at(
    ctx: &SessionContext,
    url: &Url,
    version: u64,
) -> segflow_core::Result<Vec<(String, Vec<Option<String>>)>> {
    let delta = publish::open_table_at(ctx, url, version).await?;
    Ok(publish::active_files(&delta, url).await?.1)
}

/// The day of a snapshot (customer_segments' `as_of`, the same in every row); `None` without
/// rows.
pub async fn snapshot_day(
    cx: &segflow_core::stage::StageContext<'_>,
    segments: &DataFrame,
) -> segflow_core::Result<Option<chrono::NaiveDate>> {
    use segflow_core::datafusion::arrow::array::{Array as _, Date32Array};
    use segflow_core::datafusion::functions_aggregate::expr_fn::max;
    use segflow_core::datafusion::prelude::col;
    let batches = segments
        .clone()
        .aggregate(vec![], vec![max(col("as_of")).alias("as_of")])
        .map_err(cx.df_err("reading customer_segments' as_of"))?
        .collect()
        .await
        .map_err(cx.df_err("reading customer_segments' as_of"))?;
    Ok(batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Date32Array>().cloned())
        .filter(|a| a.is_valid(0))
        .and_then(|a| a.value_as_date(0)))
}
