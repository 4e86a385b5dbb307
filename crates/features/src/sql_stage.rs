//! `features.sql`: one SQL file, its named params bound, its result materialized as a table.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use segflow_core::datafusion::execution::context::SQLOptions;
use segflow_core::spec::StageSpec;
use segflow_core::sql::{Params, SqlFile};
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::yaml::Value;
use segflow_core::{Error, Result};
use serde::Deserialize;

/// The YAML keys of a `features.sql` stage (besides `id`, `kind`, `output`, `checks`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStageConfig {
    /// The query, relative to the pipeline's `sql/` directory: `features/customer_rfm.sql`.
    pub sql: String,
    /// Values for the query's `$name` placeholders. Every placeholder needs one and every
    /// value must be used. `${var}` references are expanded first. `{ table: T, column: C }`
    /// reads the value from the one row of the run's table `T` when the stage runs.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

/// A stage that runs one SQL file.
#[derive(Debug)]
pub struct SqlStage {
    id: String,
    file: SqlFile,
    params: Params,
    output: String,
}

pub(crate) struct SqlStageFactory;

impl StageFactory for SqlStageFactory {
    fn kind(&self) -> &'static str {
        "features.sql"
    }

    fn summary(&self) -> &'static str {
        "runs one SQL file (with named $params) over the run's tables and materializes the result"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: as_of
kind: features.sql
sql: features/run_as_of.sql
params: { as_of: "2026-11-01" }
output: run_as_of
checks: [{ not_null: [as_of] }]
"#
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        let config: SqlStageConfig = spec.config(cx.source)?;
        let (file, params) = load(spec, cx, &config.sql, &config.params)?;
        let Some(output) = spec.output.clone() else {
            return Err(spec.error(
                cx.source,
                "has no `output`; name the table the query produces",
            ));
        };
        // The query and its table params name its inputs; a hand-written list that disagrees
        // would be a lie.
        if !spec.inputs.is_empty() {
            let declared: BTreeSet<String> = spec.inputs.iter().cloned().collect();
            let read = tables_read(&file, &params);
            if declared != read {
                return Err(spec.error(
                    cx.source,
                    format!(
                        "`inputs` says [{}] but {} and its params read [{}]; remove `inputs` (it is derived from the SQL) or fix it",
                        spec.inputs.join(", "),
                        file.name,
                        read.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Ok(Box::new(SqlStage {
            id: spec.id.clone(),
            file,
            params,
            output,
        }))
    }
}

#[async_trait]
impl Stage for SqlStage {
    fn inputs(&self) -> Vec<String> {
        tables_read(&self.file, &self.params).into_iter().collect()
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn describe(&self) -> Vec<String> {
        vec![format!("sql: {}", self.file.path.display())]
    }

    async fn fingerprint(
        &self,
        _ctx: &segflow_core::datafusion::prelude::SessionContext,
        _run: &segflow_core::stage::RunInfo,
        f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> Result<()> {
        // The params are YAML keys; the query is the file's text.
        f.add("sql", &self.file.text);
        Ok(())
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        let df = query(cx, &self.id, &self.file, &self.params).await?;
        match cx.materialize(&self.output, df).await {
            Err(Error::DataFusion { source, .. }) => Err(sql_error(&self.id, &self.file)(source)),
            other => other.map(|_| ()),
        }
    }
}

/// SQL file `path` (relative to `sql/`) and its `params` from YAML, checked against its
/// placeholders, for stage `spec`: a `features.sql` stage's query, a `features.clv` stage's
/// summary.
pub(crate) fn load(
    spec: &StageSpec,
    cx: &BuildContext<'_>,
    path: &str,
    params: &BTreeMap<String, Value>,
) -> Result<(SqlFile, Params)> {
    let file = SqlFile::load(cx.sql_dir, path)?;
    let params = Params::from_yaml(params).map_err(|m| spec.error(cx.source, m))?;
    params.check(&cx.source.file, &spec.id, &file)?;
    Ok((file, params))
}

/// The run tables SQL file `file` reads with `params`: those it names and its table params'.
pub(crate) fn tables_read(file: &SqlFile, params: &Params) -> BTreeSet<String> {
    file.tables.union(&params.tables()).cloned().collect()
}

/// The plan of SQL file `file` with `params` bound, for stage `stage`: a `features.sql`
/// stage's table, a `features.clv` stage's summary.
pub(crate) async fn query(
    cx: &StageContext<'_>,
    stage: &str,
    file: &SqlFile,
    params: &Params,
) -> Result<segflow_core::datafusion::prelude::DataFrame> {
    // A SQL file is a query: no DDL or DML may change the session behind the runner's back.
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let mut df = cx
        .ctx
        .sql_with_options(&file.text, options)
        .await
        .map_err(sql_error(stage, file))?;
    if !params.is_empty() {
        let values = params.values(stage, cx.ctx).await?;
        df = df
            .with_param_values(values)
            .map_err(sql_error(stage, file))?;
    }
    Ok(df)
}

/// A DataFusion error of SQL file `file`, in stage `stage`.
pub(crate) fn sql_error(
    stage: &str,
    file: &SqlFile,
) -> impl Fn(segflow_core::datafusion::error::DataFusionError) -> Error {
    let (stage, sql) = (stage.to_string(), file.path.clone());
    move |source| Error::Sql {
        stage: stage.clone(),
        sql: sql.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&SqlStageFactory, &root).unwrap();
        assert_eq!(stage.outputs(), ["run_as_of"]);
        assert_eq!(stage.inputs(), ["orders"]);
    }
}
