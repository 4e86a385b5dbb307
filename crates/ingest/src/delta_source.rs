//! `ingest.delta`: a published Delta table (its current version) as a run table, e.g. the
//! segment history earlier runs wrote, to compare this run's segments with.
//!
//! A table that does not exist yet (the first run) is not an error: the stage yields an empty
//! table shaped like `empty_like`, a table of this run with the columns the Delta table will
//! have, so the SQL that reads it runs unchanged and finds no rows.
//!
//! Output tables only gain columns (output contract v1), so a table published by an earlier
//! segflow can lack some of `empty_like`'s: those read as nulls, as Delta's own schema
//! evolution reads them in files written before a column was added.

use async_trait::async_trait;
use segflow_core::datafusion::common::ScalarValue;
use segflow_core::datafusion::logical_expr::{cast, lit};
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::{Result, publish, storage};
use serde::Deserialize;
use url::Url;

/// The YAML keys of an `ingest.delta` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaSourceConfig {
    /// Location of the Delta table: a directory or an object store URL.
    pub path: String,
    /// A table of this run whose columns the Delta table has; its empty copy stands in while
    /// the Delta table does not exist.
    pub empty_like: String,
}

/// A built `ingest.delta` stage.
#[derive(Debug)]
pub struct DeltaSource {
    url: Url,
    empty_like: String,
    output: String,
}

pub(crate) struct DeltaSourceFactory;

impl StageFactory for DeltaSourceFactory {
    fn kind(&self) -> &'static str {
        "ingest.delta"
    }

    fn summary(&self) -> &'static str {
        "reads a published Delta table (its current version); empty, shaped like a run table, until it exists"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: history
kind: ingest.delta
path: /tmp/segflow-example/segment_history
empty_like: customer_segments
output: segment_history_before
"#
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        let config: DeltaSourceConfig = spec.config(cx.source)?;
        let Some(output) = spec.output.clone() else {
            return Err(spec.error(cx.source, "has no `output`; name the table it produces"));
        };
        if !spec.inputs.is_empty() {
            return Err(spec.error(
                cx.source,
                "takes no `inputs`: it reads `path` and, until that exists, `empty_like`",
            ));
        }
        let url = storage::parse_location(&config.path)
            .map_err(|e| spec.error(cx.source, format!("`path`: {e}")))?;
        Ok(Box::new(DeltaSource {
            url,
            empty_like: config.empty_like,
            output,
        }))
    }
}

#[async_trait]
impl Stage for DeltaSource {
    fn inputs(&self) -> Vec<String> {
        vec![self.empty_like.clone()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "{} (delta; empty like {} until it exists)",
            self.url, self.empty_like
        )]
    }

    async fn fingerprint(
        &self,
        ctx: &segflow_core::datafusion::prelude::SessionContext,
        _run: &segflow_core::stage::RunInfo,
        f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> Result<()> {
        // The table's current version is what the stage reads.
        f.add_json("version", &publish::latest_version(ctx, &self.url).await?)
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        let like = cx.table(&self.empty_like).await?;
        let df = match publish::read_published(cx.ctx, &self.url).await? {
            Some(mut df) => {
                for field in like.schema().fields() {
                    if df
                        .schema()
                        .index_of_column_by_name(None, field.name())
                        .is_none()
                    {
                        let null = cast(lit(ScalarValue::Null), field.data_type().clone());
                        df = df
                            .with_column(field.name(), null)
                            .map_err(cx.df_err(format!(
                                "adding `{}`, which the published table lacks",
                                field.name()
                            )))?;
                    }
                }
                df
            }
            None => like
                .limit(0, Some(0))
                .map_err(cx.df_err(format!("an empty copy of `{}`", self.empty_like)))?,
        };
        cx.materialize(&self.output, df).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&DeltaSourceFactory, &root).unwrap();
        assert_eq!(stage.inputs(), ["customer_segments"]);
        assert_eq!(stage.outputs(), ["segment_history_before"]);
    }
}
