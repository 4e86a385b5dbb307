//! `export.postgres`: keeps tables in a PostgreSQL schema in sync with a published run.
//!
//! The stage runs after the run's publish ([`Stage::after_publish`]) and reads each table at
//! the version `<runs>/_published.json` names, so the database receives one consistent run.
//! Each table syncs in its own transaction, with its Delta version recorded in
//! `<schema>.segflow_sync_state` in that same transaction ([`sync`]).

pub mod connect;
pub mod copy;
pub mod schema;
pub mod sync;

use async_trait::async_trait;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use serde::Deserialize;
use url::Url;

use crate::published::Published;
use connect::Target;
use sync::{Mode, TableSync};

/// The YAML keys of an `export.postgres` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq URL (`postgres://USER@HOST:PORT/DATABASE`); a password not in it comes from
    /// `PGPASSWORD`.
    pub url: String,
    /// With `skip_without_url: true` an empty `url` skips the stage (a pipeline that syncs only
    /// when `postgres_url` is set); otherwise running the stage fails (exit 2).
    #[serde(default)]
    pub skip_without_url: bool,
    /// The schema the tables go in (created when missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// The runs folder (a pipeline's `runs:`) whose published run is synced.
    pub runs: String,
    /// The tables, synced in this order.
    pub tables: Vec<TableConfig>,
}

fn default_schema() -> String {
    "segflow".into()
}

/// One table's sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The published table.
    pub table: String,
    /// Its name in the schema (default: the same).
    #[serde(default, rename = "as")]
    pub name: Option<String>,
    /// How the table is kept in sync.
    pub mode: Mode,
    /// The primary key: required for `upsert`, optional for the others.
    #[serde(default)]
    pub key: Vec<String>,
}

/// A built `export.postgres` stage.
#[derive(Debug)]
pub struct PostgresExport {
    /// `None`: no URL given.
    url: Option<String>,
    /// No URL skips the stage rather than fail it.
    skip_without_url: bool,
    schema: String,
    runs: Url,
    tables: Vec<TableSync>,
}

pub(crate) struct PostgresExportFactory;

impl StageFactory for PostgresExportFactory {
    fn kind(&self) -> &'static str {
        "export.postgres"
    }

    fn summary(&self) -> &'static str {
        "after publishing, syncs published tables to PostgreSQL (replace, upsert by key, or apply changes), one transaction per table"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: sync_postgres
kind: export.postgres
url: postgres://segflow@127.0.0.1:5432/crm
schema: segflow
runs: /tmp/segflow-example/_runs
tables:
  - { table: customer_segments, mode: upsert, key: [customer_id] }
  - { table: segment_profiles, mode: replace, key: [segmentation, segment] }
  - { table: segment_changes, mode: changes }
"#
    }

    fn build(
        &self,
        spec: &StageSpec,
        cx: &BuildContext<'_>,
    ) -> segflow_core::Result<Box<dyn Stage>> {
        let config: PostgresConfig = spec.config(cx.source)?;
        crate::published::refuse_run_tables(
            spec,
            cx,
            "syncs the published tables named in `tables`",
        )?;
        if config.tables.is_empty() {
            return Err(spec.error(
                cx.source,
                "has no `tables`; list the published tables to sync",
            ));
        }
        // An empty URL is refused when the stage runs (exit 2), not here: `segflow validate`
        // of a sync pipeline whose postgres_url is given at run time passes.
        let url = match config.url.trim() {
            "" => None,
            u => {
                // Checked now, so a bad URL fails before any data is read (exit 2).
                Target::parse(u, None).map_err(|e| spec.error(cx.source, format!("`url`: {e}")))?;
                Some(u.to_string())
            }
        };
        if !is_plain_name(&config.schema) {
            return Err(spec.error(
                cx.source,
                format!(
                    "`schema: {}` is not a plain name; use lowercase letters, digits and `_`",
                    config.schema
                ),
            ));
        }
        let runs = crate::published::folder_key(spec, cx, "runs", &config.runs)?;
        let mut tables = Vec::new();
        for t in config.tables {
            let name = t.name.unwrap_or_else(|| t.table.clone());
            if !is_plain_name(&name) || name == sync::STATE {
                return Err(spec.error(
                    cx.source,
                    format!(
                        "table name `{name}` is not a plain name, or is the sync state table's"
                    ),
                ));
            }
            if t.mode == Mode::Upsert && t.key.is_empty() {
                return Err(spec.error(
                    cx.source,
                    format!("table `{name}`: `mode: upsert` needs a `key` (the columns a row is found by)"),
                ));
            }
            if tables.iter().any(|x: &TableSync| x.name == name) {
                return Err(spec.error(cx.source, format!("table `{name}` is listed twice")));
            }
            tables.push(TableSync {
                source: t.table,
                name,
                mode: t.mode,
                key: t.key,
            });
        }
        Ok(Box::new(PostgresExport {
            url,
            skip_without_url: config.skip_without_url,
            schema: config.schema,
            runs,
            tables,
        }))
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[async_trait]
impl Stage for PostgresExport {
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
        if self.url.is_none() && self.skip_without_url {
            return vec!["skipped: no url (set postgres_url)".into()];
        }
        self.tables
            .iter()
            .map(|t| {
                let key = if t.key.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", t.key.join(", "))
                };
                format!(
                    "{} -> {}.{} ({}{key})",
                    t.source, self.schema, t.name, t.mode
                )
            })
            .collect()
    }

    async fn fingerprint(
        &self,
        _ctx: &SessionContext,
        _run: &segflow_core::stage::RunInfo,
        _f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> segflow_core::Result<()> {
        // It reads the published run and produces no table.
        Ok(())
    }

    async fn run(&self, cx: &StageContext<'_>) -> segflow_core::Result<()> {
        let Some(url) = &self.url else {
            if self.skip_without_url {
                tracing::info!(stage = %cx.stage_id, "no PostgreSQL url: sync skipped");
                return Ok(());
            }
            return Err(crate::error::ExportError::Settings(
                "the PostgreSQL url is empty; set --var postgres_url=postgres://USER@HOST:PORT/DATABASE \
                 (the password in PGPASSWORD)"
                    .into(),
            )
            .into_core(cx.stage_id));
        };
        let fail = |e: crate::error::ExportError| e.into_core(cx.stage_id);
        let target = Target::parse(url, std::env::var("PGPASSWORD").ok()).map_err(fail)?;
        let published = Published::read(cx.ctx, &self.runs).await?;
        let mut client = target.connect().await.map_err(fail)?;
        sync::prepare(&client, &target, &self.schema)
            .await
            .map_err(fail)?;
        tracing::info!(server = %target.display, schema = %self.schema, run = %published.pointer.run_id, "syncing");
        for table in &self.tables {
            let started = std::time::Instant::now();
            let outcome = sync::sync_table(
                cx.ctx,
                &mut client,
                &target,
                &self.schema,
                &published,
                table,
            )
            .await
            .map_err(fail)?;
            let seconds = started.elapsed().as_secs_f64();
            if outcome.up_to_date {
                tracing::info!(table = %table.name, version = outcome.version, "up to date");
            } else {
                tracing::info!(
                    table = %table.name,
                    mode = %table.mode,
                    version = outcome.version,
                    copied = outcome.copied,
                    inserted = outcome.inserted,
                    updated = outcome.updated,
                    deleted = outcome.deleted,
                    rows_per_s = (outcome.copied as f64 / seconds.max(1e-9)).round(),
                    "synced"
                );
            }
            let mut metric = serde_json::to_value(&outcome).expect("an outcome serializes");
            metric["seconds"] = serde_json::json!((seconds * 1000.0).round() / 1000.0);
            cx.metric(&table.name, metric);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&PostgresExportFactory, &root).unwrap();
        assert!(stage.after_publish());
        assert_eq!(
            stage.describe()[0],
            "customer_segments -> segflow.customer_segments (upsert on customer_id)"
        );
    }

    #[test]
    fn upsert_needs_a_key_and_urls_are_checked_when_built() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let build = |y: &str| segflow_core::stage::build_yaml(&PostgresExportFactory, &root, y);
        let e = build(
            "id: s\nkind: export.postgres\nurl: postgres://u@h/db\nruns: /tmp/r\ntables:\n  - { table: t, mode: upsert }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs a `key`"), "{e}");
        let e = build(
            "id: s\nkind: export.postgres\nurl: \"postgres://u:pw@[x\"\nruns: /tmp/r\ntables:\n  - { table: t, mode: replace }\n",
        )
        .unwrap_err();
        assert!(!e.to_string().contains("pw@"), "{e}");
        let skipped = build(
            "id: s\nkind: export.postgres\nurl: \"\"\nskip_without_url: true\nruns: /tmp/r\ntables:\n  - { table: t, mode: replace }\n",
        )
        .unwrap();
        assert!(skipped.describe()[0].starts_with("skipped"));
    }
}
