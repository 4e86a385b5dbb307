//! The tables of one published run, for the exports that copy them out: the run pointer
//! (`<runs>/_published.json`, [`segflow_core::pointer`]) and each table at the Delta version it
//! names, so that every table an export writes comes from the same run.

use std::collections::BTreeSet;

use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};
use segflow_core::pointer::{Pointer, PointerTable};
use segflow_core::spec::StageSpec;
use segflow_core::stage::BuildContext;
use segflow_core::{Error, pointer, publish, storage};
use url::Url;

/// Refuses `inputs:` and `output:` on a stage that reads the published run (`reads` says
/// what it reads instead).
pub(crate) fn refuse_run_tables(
    spec: &StageSpec,
    cx: &BuildContext<'_>,
    reads: &str,
) -> segflow_core::Result<()> {
    if spec.output.is_some() || !spec.inputs.is_empty() {
        return Err(spec.error(
            cx.source,
            format!("takes no `inputs` or `output`: it {reads}"),
        ));
    }
    Ok(())
}

/// The folder a stage's key `key` names (a local path or an object store URL).
pub(crate) fn folder_key(
    spec: &StageSpec,
    cx: &BuildContext<'_>,
    key: &str,
    value: &str,
) -> segflow_core::Result<Url> {
    storage::parse_location(value)
        .map(|u| storage::as_dir(&u))
        .map_err(|e| spec.error(cx.source, format!("`{key}`: {e}")))
}

/// One run's published tables.
#[derive(Debug)]
pub struct Published {
    runs: Url,
    /// The pointer as read.
    pub pointer: Pointer,
    /// Whether `pointer` was read from `_published.json`; false when it lists the tables at
    /// their latest versions instead ([`Published::read_or_latest`]), with no run id.
    pub from_pointer: bool,
}

/// The error of a runs folder without a published run.
fn nothing_published(runs: &Url) -> Error {
    Error::InputNotFound {
        stage: "export".into(),
        url: format!(
            "{} (nothing is published there yet: run the pipeline first)",
            pointer::location(runs)
        ),
    }
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
    /// The pointer under `runs` (a pipeline's `runs:` folder).
    pub async fn read(ctx: &SessionContext, runs: &Url) -> segflow_core::Result<Published> {
        match pointer::read(ctx, runs).await? {
            Some((pointer, _)) => Ok(Published {
                runs: runs.clone(),
                pointer,
                from_pointer: true,
            }),
            None => Err(nothing_published(runs)),
        }
    }

    /// The pointer under `runs`; without one (an output published before pointers existed),
    /// the tables `tables` (name, location) at their latest Delta versions, those that exist.
    pub async fn read_or_latest(
        ctx: &SessionContext,
        runs: &Url,
        pipeline: &str,
        tables: &[(String, Url)],
    ) -> segflow_core::Result<Published> {
        if let Some((pointer, _)) = pointer::read(ctx, runs).await? {
            return Ok(Published {
                runs: runs.clone(),
                pointer,
                from_pointer: true,
            });
        }
        let mut found = std::collections::BTreeMap::new();
        for (name, url) in tables {
            if let Some(version) = publish::latest_version(ctx, url).await? {
                found.insert(
                    name.clone(),
                    PointerTable {
                        url: url.to_string(),
                        version,
                        run_id: String::new(),
                    },
                );
            }
        }
        if found.is_empty() {
            return Err(nothing_published(runs));
        }
        Ok(Published {
            runs: runs.clone(),
            pointer: Pointer {
                pointer_version: pointer::VERSION,
                run_id: String::new(),
                pipeline: pipeline.to_string(),
                published_at: chrono::Utc::now(),
                tables: found,
            },
            from_pointer: false,
        })
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

impl Table {
    /// The values of the table's partition column whose files differ between `version` (what
    /// an earlier export read) and this one: partitions added, replaced or removed since.
    /// `None` when what changed is unknown, and a reader takes every row: the table is not
    /// partitioned by one column, or `version`'s log entries were cleaned up (log retention;
    /// said in a warning).
    pub async fn changed_since(
        &self,
        ctx: &SessionContext,
        version: u64,
    ) -> Option<BTreeSet<Option<String>>> {
        if self.partition_by.len() != 1 {
            return None;
        }
        match files_at(ctx, &self.url, version).await {
            Ok(before) => Some(changed_partitions(&before, &self.files)),
            Err(e) => {
                tracing::warn!(
                    "version {version} of {} cannot be read ({e}); what changed since is \
                     unknown, so every row is taken",
                    self.name
                );
                None
            }
        }
    }

    /// The rows of the partitions `values` of the table's partition column (as
    /// [`Table::changed_since`] gives them).
    pub fn partition_rows(
        &self,
        values: &BTreeSet<Option<String>>,
    ) -> segflow_core::datafusion::error::Result<DataFrame> {
        let column = self.partition_by.first().map_or("", String::as_str);
        let present: Vec<_> = values.iter().flatten().map(|v| lit(v.clone())).collect();
        let mut filter = lit(false);
        if !present.is_empty() {
            filter = cast(col(column), DataType::Utf8).in_list(present, false);
        }
        if values.contains(&None) {
            filter = filter.or(col(column).is_null());
        }
        self.rows.clone().filter(filter)
    }
}

/// The partition values (of a table with one partition column) whose files differ between two
/// versions' file lists: partitions added, replaced or removed.
pub fn changed_partitions(
    before: &[(String, Vec<Option<String>>)],
    now: &[(String, Vec<Option<String>>)],
) -> BTreeSet<Option<String>> {
    let set = |files: &[(String, Vec<Option<String>>)]| -> BTreeSet<(String, Option<String>)> {
        files
            .iter()
            .map(|(p, v)| (p.clone(), v.first().cloned().flatten()))
            .collect()
    };
    let (before, now) = (set(before), set(now));
    before
        .symmetric_difference(&now)
        .map(|(_, v)| v.clone())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, v: &str) -> (String, Vec<Option<String>>) {
        (path.to_string(), vec![Some(v.to_string())])
    }

    #[test]
    fn changed_partitions_are_those_with_other_files() {
        let before = vec![f("a=1/x", "1"), f("a=2/y", "2")];
        // A run of as_of 3, and a rerun of 2 (its file replaced).
        let now = vec![f("a=1/x", "1"), f("a=2/z", "2"), f("a=3/w", "3")];
        let got = changed_partitions(&before, &now);
        assert_eq!(
            got,
            [Some("2".into()), Some("3".into())].into_iter().collect()
        );
        assert!(changed_partitions(&now, &now).is_empty());
    }
}
