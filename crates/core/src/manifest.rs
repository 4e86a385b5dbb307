//! The run manifest: one JSON document per run at `<runs>/<run_id>.json`, written when the run
//! ends, whether it passed or failed. Its fields are part of segflow's documented output
//! contract (docs/output-contract.md; its JSON Schema is docs/manifest.schema.json); add fields, never rename or remove them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checks::CheckReport;
use crate::error::ErrorClass;
use crate::vars::Vars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    /// Not reached because an earlier stage failed or the run was interrupted.
    Skipped,
    /// Stopped by SIGINT or SIGTERM (the run, and the stage that was running).
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunManifest {
    /// Version of this document's layout.
    pub manifest_version: u32,
    pub run_id: String,
    pub pipeline: String,
    pub pipeline_file: String,
    pub segflow_version: String,
    /// Where the plans ran: `local`, or the cluster (`ballista://host:port`).
    pub engine: String,
    pub status: Status,
    /// The error chain when the run failed.
    pub error: Option<String>,
    /// What kind of failure (the exit code's class), when the run failed.
    pub error_class: Option<ErrorClass>,
    pub vars: Vars,
    /// This attempt of the run: 1, or more for `run --resume RUN_ID` ([`crate::resume`]).
    pub attempt: u32,
    /// The run's earlier attempts, oldest first.
    pub previous_attempts: Vec<crate::resume::AttemptSummary>,
    /// When this attempt started and ended.
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The process's peak resident memory over the run (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    pub stages: Vec<StageReport>,
    pub published: Vec<PublishReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub id: String,
    pub kind: String,
    pub status: Status,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_ms: u64,
    /// The process's peak resident memory while the stage ran, sampled every 20 ms: stages
    /// that ran beside it count too ([`crate::resident`]). Absent where it cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Rows of each input table.
    pub inputs: BTreeMap<String, u64>,
    pub rows_in: u64,
    pub rows_out: u64,
    /// Run tables produced: name -> location under the run's work prefix.
    pub outputs: BTreeMap<String, OutputReport>,
    pub checks: Vec<CheckReport>,
    /// Figures the stage chose to report (e.g. customers per segment).
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// The processes that wrote the stage's files: `local` on the embedded engine, the
    /// executors' ids on a cluster.
    pub workers: Vec<String>,
    /// The cluster's ids of the jobs the stage ran (none on the embedded engine).
    pub engine_jobs: Vec<String>,
    pub error: Option<String>,
    /// What kind of failure, when the stage failed.
    pub error_class: Option<ErrorClass>,
    /// What the stage's tables are a function of ([`crate::fingerprint`]); absent for a
    /// stage that did not start.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The stage did not run in this attempt: an earlier attempt's tables, with an unchanged
    /// fingerprint, were reused (the report is that attempt's).
    #[serde(default)]
    pub reused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputReport {
    pub rows: u64,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishReport {
    pub table: String,
    pub url: String,
    /// The Delta version before this run's commit (`None`: the table was created).
    pub previous_version: Option<u64>,
    pub version: u64,
    pub rows: u64,
}

impl StageReport {
    pub fn skipped(id: &str, kind: &str) -> Self {
        StageReport {
            id: id.to_string(),
            kind: kind.to_string(),
            status: Status::Skipped,
            started_at: None,
            duration_ms: 0,
            peak_rss_bytes: None,
            inputs: BTreeMap::new(),
            rows_in: 0,
            rows_out: 0,
            outputs: BTreeMap::new(),
            checks: Vec::new(),
            metrics: BTreeMap::new(),
            workers: Vec::new(),
            engine_jobs: Vec::new(),
            error: None,
            error_class: None,
            fingerprint: None,
            reused: false,
        }
    }
}

/// The values var `var` had in the succeeded runs of pipeline `pipeline` whose manifests are
/// under `runs` (e.g. the as_of dates a backfill has already published). A manifest that cannot
/// be parsed is an error rather than skipped: skipping it could rerun a published period.
pub async fn succeeded_values(
    ctx: &datafusion::prelude::SessionContext,
    runs: &url::Url,
    pipeline: &str,
    var: &str,
) -> crate::Result<std::collections::BTreeSet<String>> {
    Ok(read_all(ctx, runs)
        .await?
        .into_iter()
        .filter(|(_, m)| m["pipeline"] == pipeline && m["status"] == "succeeded")
        .filter_map(|(_, m)| m["vars"][var].as_str().map(str::to_string))
        .collect())
}

/// Every manifest under `runs` (`<run_id>.json`; not the publish pointer or the lease, whose
/// names start with `_`), as JSON. One that is not JSON is an error that names it.
async fn read_all(
    ctx: &datafusion::prelude::SessionContext,
    runs: &url::Url,
) -> crate::Result<Vec<(url::Url, serde_json::Value)>> {
    let pattern = crate::storage::join(runs, "*.json");
    let mut out = Vec::new();
    for file in crate::storage::list_files(ctx, &pattern).await? {
        let name = file.url.path_segments().and_then(|mut s| s.next_back());
        if name.is_none_or(|n| n.starts_with('_')) {
            continue;
        }
        let bytes = crate::storage::read(ctx, &file.url).await?;
        let m = serde_json::from_slice(&bytes).map_err(|e| crate::Error::Storage {
            location: file.url.to_string(),
            message: format!("run manifest is not JSON ({e}); move it aside if it is not one"),
            source: None,
        })?;
        out.push((file.url, m));
    }
    Ok(out)
}

/// One run, as `segflow runs` lists it: read from its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub status: String,
    pub error_class: Option<String>,
    pub started_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// Tables the run published.
    pub published: usize,
    pub error: Option<String>,
    pub manifest: String,
}

/// The runs whose manifests are under `runs`, oldest first (run ids sort by start time). A
/// manifest that is not JSON is an error that names it.
pub async fn list_runs(
    ctx: &datafusion::prelude::SessionContext,
    runs: &url::Url,
) -> crate::Result<Vec<RunSummary>> {
    let mut out = Vec::new();
    for (url, m) in read_all(ctx, runs).await? {
        let text = |key: &str| m[key].as_str().map(str::to_string);
        out.push(RunSummary {
            run_id: text("run_id").unwrap_or_default(),
            pipeline: text("pipeline").unwrap_or_default(),
            status: text("status").unwrap_or_else(|| "unknown".into()),
            error_class: text("error_class"),
            started_at: text("started_at"),
            duration_ms: m["duration_ms"].as_u64(),
            published: m["published"].as_array().map_or(0, Vec::len),
            error: text("error"),
            manifest: url.to_string(),
        });
    }
    out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(out)
}
