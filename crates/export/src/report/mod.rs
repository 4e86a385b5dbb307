//! `export.report`: a self-contained HTML report of the published run, for marketers and BI
//! analysts: who is in each segment, what they are worth, how they move, which campaigns work
//! for whom, and what to do with each segment (the catalog's strategies).
//!
//! One file, `index.html` by default, with its CSS, script and SVG charts inline: it opens from
//! a disk or a bucket with no network. Its numbers are read from the tables at the versions
//! `_published.json` names ([`data`]); charts are drawn by plotters ([`charts`]) and the page by
//! maud ([`page`]). `segflow report` renders the same page without a run.
//! The file is replaced in one put (a rename on local disks), so a reader sees the old report
//! or the new one.

pub mod charts;
pub mod data;
pub mod page;

use async_trait::async_trait;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::storage;
use serde::Deserialize;
use url::Url;

use crate::published::Published;

/// The YAML keys of an `export.report` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The runs folder (a pipeline's `runs:`) whose published run is reported.
    pub runs: String,
    /// The HTML file to write (a path or an object store URL).
    pub path: String,
}

/// The keys of the pipeline's stage `spec` when it is an `export.report` stage (vars expanded
/// as the plan has them), for `segflow report`.
pub fn config_of(spec: &StageSpec) -> Option<ReportConfig> {
    (spec.kind == "export.report")
        .then(|| {
            segflow_core::yaml::from_value(segflow_core::yaml::Value::Mapping(spec.config.clone()))
                .ok()
        })
        .flatten()
}

/// A built `export.report` stage.
#[derive(Debug)]
pub struct ReportExport {
    runs: Url,
    path: Url,
}

impl ReportExport {
    /// The file the stage writes.
    pub fn path(&self) -> &Url {
        &self.path
    }
}

/// A rendered report.
pub struct Rendered {
    /// The page.
    pub html: String,
    /// The run it reports (`None`: tables at their latest versions).
    pub run_id: Option<String>,
}

/// Renders the report of `published`.
pub async fn render(ctx: &SessionContext, published: &Published) -> segflow_core::Result<Rendered> {
    let data = data::ReportData::load(ctx, published).await?;
    Ok(Rendered {
        html: page::render(&data),
        run_id: data.run.run_id.clone(),
    })
}

/// Writes a rendered page to `url` in one put.
pub async fn write(ctx: &SessionContext, url: &Url, html: String) -> segflow_core::Result<()> {
    crate::folder::put(ctx, url, html.into_bytes()).await
}

pub(crate) struct ReportExportFactory;

impl StageFactory for ReportExportFactory {
    fn kind(&self) -> &'static str {
        "export.report"
    }

    fn summary(&self) -> &'static str {
        "after publishing, writes a self-contained HTML report of the published segments (charts, profiles, strategies)"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: report
kind: export.report
runs: /tmp/segflow-example/_runs
path: /tmp/segflow-example/report/index.html
"#
    }

    fn build(
        &self,
        spec: &StageSpec,
        cx: &BuildContext<'_>,
    ) -> segflow_core::Result<Box<dyn Stage>> {
        let config: ReportConfig = spec.config(cx.source)?;
        crate::published::refuse_run_tables(spec, cx, "reports the published tables")?;
        let path = storage::parse_location(&config.path)
            .map_err(|e| spec.error(cx.source, format!("`path`: {e}")))?;
        if path.path().ends_with('/') {
            return Err(spec.error(
                cx.source,
                format!(
                    "`path: {}` is a folder; name the HTML file, e.g. .../report/index.html",
                    config.path
                ),
            ));
        }
        Ok(Box::new(ReportExport {
            runs: crate::published::folder_key(spec, cx, "runs", &config.runs)?,
            path,
        }))
    }
}

#[async_trait]
impl Stage for ReportExport {
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn after_publish(&self) -> bool {
        true
    }

    fn describe(&self) -> Vec<String> {
        vec![format!("report -> {}", self.path)]
    }

    async fn fingerprint(
        &self,
        _ctx: &SessionContext,
        _run: &segflow_core::stage::RunInfo,
        _f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> segflow_core::Result<()> {
        // It reads the published run, after the run's own tables; it produces none.
        Ok(())
    }

    async fn run(&self, cx: &StageContext<'_>) -> segflow_core::Result<()> {
        let started = std::time::Instant::now();
        let published = Published::read(cx.ctx, &self.runs).await?;
        let rendered = render(cx.ctx, &published).await?;
        let bytes = rendered.html.len();
        write(cx.ctx, &self.path, rendered.html).await?;
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(bytes, ms, "wrote the report {}", self.path);
        cx.metric("report_bytes", serde_json::json!(bytes));
        cx.metric("report_ms", serde_json::json!(ms));
        cx.metric("report", serde_json::json!(self.path.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&ReportExportFactory, &root).unwrap();
        assert!(stage.after_publish());
        assert_eq!(
            stage.describe(),
            ["report -> file:///tmp/segflow-example/report/index.html"]
        );
    }
}
