//! `export.delta`: publish run tables as Delta Lake tables, one new version per run.

use std::collections::BTreeMap;

use async_trait::async_trait;
use segflow_core::publish::{PublishMode, PublishRequest};
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::{Result, storage};
use serde::Deserialize;

/// The YAML keys of an `export.delta` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaExportConfig {
    /// Run table -> Delta table location (a local path or an object store URL). Each run
    /// overwrites the table with a new version; earlier versions stay readable (time travel)
    /// until they are vacuumed.
    pub tables: BTreeMap<String, TableTarget>,
}

/// Where one table goes: a location, or a location with options.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TableTarget {
    /// `customer_segments: ${output}/customer_segments`
    Location(String),
    /// `orders: { path: ..., partition_by: [order_month] }`
    Detailed(TargetOptions),
}

/// Options of one published table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOptions {
    /// Table location.
    pub path: String,
    /// Columns to partition the table by.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Let a run replace the table's schema. Off by default: readers rely on the schema, and a
    /// run may only add columns to it (older rows read null there).
    #[serde(default)]
    pub allow_schema_change: bool,
    /// `overwrite` (default: the new version holds this run's rows), `append` (the run's
    /// rows are added in one commit; for logs such as the quarantine) or `replace_partitions`
    /// (the run's rows replace the published rows of their `partition_by` values, one commit;
    /// for snapshots such as the segment history).
    #[serde(default)]
    pub mode: PublishMode,
}

/// A built `export.delta` stage.
#[derive(Debug)]
pub struct DeltaExport {
    requests: Vec<PublishRequest>,
}

pub(crate) struct DeltaExportFactory;

impl StageFactory for DeltaExportFactory {
    fn kind(&self) -> &'static str {
        "export.delta"
    }

    fn summary(&self) -> &'static str {
        "publishes run tables as Delta Lake tables (one atomic commit each) once the run has passed"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: publish
kind: export.delta
tables:
  customer_segments: /tmp/segflow-example/customer_segments
  orders: { path: /tmp/segflow-example/staging/orders, partition_by: [currency] }
"#
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        let config: DeltaExportConfig = spec.config(cx.source)?;
        if config.tables.is_empty() {
            return Err(spec.error(
                cx.source,
                "has no `tables`; map each run table to a location",
            ));
        }
        if spec.output.is_some() || !spec.inputs.is_empty() {
            return Err(spec.error(
                cx.source,
                "takes no `inputs` or `output`: its inputs are the keys of `tables`",
            ));
        }
        let mut requests = Vec::new();
        for (table, target) in config.tables {
            let (path, partition_by, allow_schema_change, mode) = match target {
                TableTarget::Location(p) => (p, Vec::new(), false, PublishMode::Overwrite),
                TableTarget::Detailed(o) => (o.path, o.partition_by, o.allow_schema_change, o.mode),
            };
            let url = storage::parse_location(&path)
                .map_err(|e| spec.error(cx.source, format!("table `{table}`: {e}")))?;
            if mode == PublishMode::ReplacePartitions && partition_by.len() != 1 {
                return Err(spec.error(
                    cx.source,
                    format!(
                        "table `{table}`: `mode: replace_partitions` needs exactly one \
                         `partition_by` column (the rows of its values in this run replace \
                         the published ones)"
                    ),
                ));
            }
            // Reports name the table by where it goes when that differs from the run table
            // (customer_segments published as segment_history).
            let last = url
                .path_segments()
                .and_then(|mut s| s.rfind(|p| !p.is_empty()));
            let name = last.filter(|l| *l != table).map(str::to_string);
            requests.push(PublishRequest {
                table,
                name,
                url,
                partition_by,
                allow_schema_change,
                mode,
                replace_where: None,
                commit_info: Vec::new(),
            });
        }
        Ok(Box::new(DeltaExport { requests }))
    }
}

#[async_trait]
impl Stage for DeltaExport {
    fn inputs(&self) -> Vec<String> {
        self.requests.iter().map(|r| r.table.clone()).collect()
    }

    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    async fn fingerprint(
        &self,
        _ctx: &segflow_core::datafusion::prelude::SessionContext,
        _run: &segflow_core::stage::RunInfo,
        _f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> Result<()> {
        // Its publish requests are all YAML keys; it produces no table.
        Ok(())
    }

    fn describe(&self) -> Vec<String> {
        self.requests
            .iter()
            .map(|r| match r.mode {
                PublishMode::Overwrite => format!("{} -> {} (delta)", r.table, r.url),
                PublishMode::Append => format!("{} -> {} (delta, append)", r.table, r.url),
                PublishMode::ReplacePartitions => format!(
                    "{} -> {} (delta, replacing its {} partitions)",
                    r.table,
                    r.url,
                    r.partition_by.join(", ")
                ),
            })
            .collect()
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        for r in &self.requests {
            cx.publish(r.clone());
        }
        Ok(())
    }

    /// Known from the YAML, so the stages that produce these tables write them straight into
    /// their Delta tables where the mode allows, and publishing is the commit.
    fn publish_targets(&self) -> Vec<PublishRequest> {
        self.requests.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&DeltaExportFactory, &root).unwrap();
        assert_eq!(stage.inputs(), ["customer_segments", "orders"]);
        assert!(stage.describe()[1].contains("staging/orders"));
    }
}
