//! Resuming a failed run: `segflow run --resume RUN_ID` (docs/scheduling.md, "Resume").
//!
//! A run that does not succeed keeps its folder, `<runs>/<run_id>/`: its work tables, a record
//! of the run (`run.json`), and one checkpoint per stage that passed (`stages/<id>.json`: the
//! stage's fingerprint, its tables' files and schemas, its publish requests and its report).
//! Resuming is another attempt of the same run, under the same run id: stages whose checkpoint
//! has the fingerprint the stage has now ([`crate::fingerprint`]) and whose files are all still
//! there are not run again; their tables are registered over the files the earlier attempt
//! wrote. Every other stage runs. Tables written straight into a Delta table (write once) are
//! committed by whichever attempt publishes, from their Add actions in the checkpoint.
//!
//! Keeping the run id keeps everything that names it consistent: the `run_id` column of
//! quarantine rows, the Delta commits' run, and the marks ([`crate::publish`]'s `txn`) by which
//! an attempt finds the commits an earlier attempt made before it failed mid-publish, so that
//! no table is committed twice. Before publishing, an attempt records each table's version
//! (`publishing.json`); a later attempt looks for its marks only after those versions.

use std::collections::BTreeMap;

use arrow::datatypes::{Schema, SchemaRef};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::ObjectStoreExt as _;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::files::TableFile;
use crate::manifest::{StageReport, Status};
use crate::plan::Plan;
use crate::publish::{PublishRequest, WrittenFiles};
use crate::storage;
use crate::table::TableInfo;

/// `<runs>/<run_id>/run.json`: what a later attempt needs to know of the run, rewritten when
/// each attempt starts (a killed attempt writes no manifest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    /// When the run's first attempt started: the run's time for every attempt (an ingest's
    /// "today", commit info).
    pub started_at: DateTime<Utc>,
    /// The attempt that wrote this record (1 for the first).
    pub attempt: u32,
    pub attempt_started_at: DateTime<Utc>,
    /// The attempts before it, as its manifest will list them.
    #[serde(default)]
    pub previous_attempts: Vec<AttemptSummary>,
}

/// One earlier attempt of a run, as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptSummary {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    /// `None`: the attempt ended without writing its manifest (it was killed).
    pub status: Option<Status>,
    pub error_class: Option<crate::ErrorClass>,
    pub error: Option<String>,
}

/// `<runs>/<run_id>/stages/<stage>.json`: a stage that passed, as a later attempt reuses it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub fingerprint: String,
    pub tables: Vec<SavedTable>,
    pub publishes: Vec<PublishRequest>,
    pub report: StageReport,
}

/// A run table as a checkpoint keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedTable {
    name: String,
    url: Url,
    rows: u64,
    /// The Arrow schema, as an IPC schema message in hex.
    schema: String,
    files: Vec<TableFile>,
    /// For a table written into a Delta table: that table, and the files' Add actions.
    delta: Option<SavedDelta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedDelta {
    url: Url,
    adds: Vec<deltalake::kernel::Add>,
    partition_by: Vec<String>,
}

/// What a resumed attempt starts from ([`open`]).
#[derive(Debug, Clone)]
pub struct Resume {
    pub run_id: String,
    pub(crate) started_at: DateTime<Utc>,
    /// This attempt's number.
    pub attempt: u32,
    pub(crate) previous_attempts: Vec<AttemptSummary>,
    /// The checkpoints of stages that passed in earlier attempts, by stage id.
    pub(crate) checkpoints: BTreeMap<String, Checkpoint>,
    /// Each table's version (by URL) before an earlier attempt began publishing, when one did.
    pub(crate) publishing: BTreeMap<String, Option<u64>>,
}

pub(crate) fn run_dir(runs: &Url, run_id: &str) -> Url {
    storage::as_dir(&storage::join(runs, run_id))
}

/// Reads what run `run_id` of `plan` left for a new attempt. The run must have its folder
/// (it did not succeed, and was not vacuumed) and be of the same pipeline.
pub async fn open(ctx: &SessionContext, plan: &Plan, run_id: &str) -> Result<Resume> {
    let refuse = |message: String| Error::Resume {
        run_id: run_id.to_string(),
        message,
    };
    if run_id.is_empty() || run_id.contains(['/', '\\']) || run_id.starts_with('.') {
        return Err(refuse("not a run id (as `segflow runs` lists them)".into()));
    }
    storage::configure(ctx, &plan.storage)?;
    let dir = run_dir(&plan.runs, run_id);
    let record_url = storage::join(&dir, "run.json");
    let record: RunRecord = match storage::get_json(ctx, &record_url).await? {
        Some(r) => r,
        None => {
            return Err(refuse(format!(
                "{record_url} does not exist: the run succeeded (its work folder is deleted), \
                 its folder was vacuumed, or it never started; `segflow runs` lists the runs"
            )));
        }
    };
    if record.pipeline != plan.name {
        return Err(refuse(format!(
            "it is a run of pipeline `{}`, not `{}`",
            record.pipeline, plan.name
        )));
    }
    // The last attempt's outcome is its manifest when it wrote one; an attempt killed before
    // it could left only its record (and maybe an earlier attempt's manifest).
    let manifest_url = storage::join(&plan.runs, &format!("{run_id}.json"));
    let manifest: Option<serde_json::Value> = storage::get_json(ctx, &manifest_url).await?;
    let last = manifest
        .as_ref()
        .filter(|m| m["attempt"].as_u64().unwrap_or(1) == u64::from(record.attempt));
    if last.is_some_and(|m| m["status"] == "succeeded") {
        return Err(refuse("it succeeded; there is nothing to resume".into()));
    }
    let mut previous_attempts = record.previous_attempts.clone();
    previous_attempts.push(AttemptSummary {
        attempt: record.attempt,
        started_at: record.attempt_started_at,
        status: last.and_then(|m| serde_json::from_value(m["status"].clone()).ok()),
        error_class: last.and_then(|m| serde_json::from_value(m["error_class"].clone()).ok()),
        error: last.and_then(|m| m["error"].as_str().map(str::to_string)),
    });

    let mut checkpoints = BTreeMap::new();
    let pattern = storage::join(&storage::as_dir(&storage::join(&dir, "stages")), "*.json");
    for file in storage::list_files(ctx, &pattern).await? {
        let bytes = storage::read(ctx, &file.url).await?;
        match serde_json::from_slice::<Checkpoint>(&bytes) {
            Ok(c) => {
                checkpoints.insert(c.report.id.clone(), c);
            }
            // A checkpoint cut short or from another version: its stage runs again.
            Err(e) => tracing::warn!("ignoring checkpoint {}: {e}", file.url),
        }
    }
    let publishing = storage::get_json(ctx, &storage::join(&dir, "publishing.json"))
        .await?
        .unwrap_or_default();
    Ok(Resume {
        run_id: run_id.to_string(),
        started_at: record.started_at,
        attempt: record.attempt + 1,
        previous_attempts,
        checkpoints,
        publishing,
    })
}

/// A table as a checkpoint keeps it; `None` for a table held in memory, which a later
/// attempt cannot read.
pub(crate) fn save_table(info: &TableInfo, written: Option<&WrittenFiles>) -> Option<SavedTable> {
    let files = info.files.clone()?;
    Some(SavedTable {
        name: info.name.clone(),
        url: info.url.clone(),
        rows: info.rows,
        schema: schema_to_hex(&info.schema),
        files,
        delta: written.map(|w| SavedDelta {
            url: w.url.clone(),
            adds: w.adds.clone(),
            partition_by: w.partition_by.clone(),
        }),
    })
}

/// Registers a checkpoint's tables in `ctx`, as the stage that wrote them would have: the run
/// tables, and the files written into Delta tables. `Ok(None)` (nothing registered) when one
/// of their files is gone.
pub(crate) async fn restore(
    ctx: &SessionContext,
    checkpoint: &Checkpoint,
) -> Result<Option<Vec<(TableInfo, Option<WrittenFiles>)>>> {
    let urls: Vec<Url> = checkpoint
        .tables
        .iter()
        .flat_map(|t| t.files.iter().map(|f| f.url.clone()))
        .collect();
    let present = futures::stream::iter(urls.into_iter().map(|url| async move {
        let store = storage::store_for(ctx, &url)?;
        match store.head(&storage::store_path(&url)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!("{url} is gone; its stage runs again");
                Ok(false)
            }
            Err(e) => Err(Error::Storage {
                location: url.to_string(),
                message: "cannot check a file of an earlier attempt".into(),
                source: Some(e),
            }),
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<bool>>()
    .await?;
    if present.contains(&false) {
        return Ok(None);
    }
    let mut out = Vec::new();
    for t in &checkpoint.tables {
        let schema = schema_from_hex(&t.schema).ok_or_else(|| {
            Error::Internal(format!(
                "checkpoint of table `{}`: unreadable schema",
                t.name
            ))
        })?;
        let fail = |source| Error::DataFusion {
            stage: checkpoint.report.id.clone(),
            context: format!("registering table `{}` of an earlier attempt", t.name),
            source,
        };
        let written = match &t.delta {
            Some(d) => {
                let written = WrittenFiles {
                    url: d.url.clone(),
                    adds: d.adds.clone(),
                    partition_by: d.partition_by.clone(),
                    schema: schema.clone(),
                };
                crate::table::register_written(ctx, &t.name, &written).map_err(fail)?;
                Some(written)
            }
            None => {
                crate::table::register(ctx, &t.name, t.files.clone(), schema.clone())
                    .map_err(fail)?;
                None
            }
        };
        out.push((
            TableInfo {
                name: t.name.clone(),
                url: t.url.clone(),
                rows: t.rows,
                schema,
                files: Some(t.files.clone()),
            },
            written,
        ));
    }
    Ok(Some(out))
}

fn schema_to_hex(schema: &Schema) -> String {
    use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        schema,
        &mut DictionaryTracker::new(false),
        &IpcWriteOptions::default(),
    );
    encoded
        .ipc_message
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn schema_from_hex(text: &str) -> Option<SchemaRef> {
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    arrow::ipc::convert::try_schema_from_flatbuffer_bytes(&bytes)
        .ok()
        .map(std::sync::Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, TimeUnit};

    #[test]
    fn schemas_survive_a_checkpoint() {
        let schema = Schema::new(vec![
            Field::new("customer_id", DataType::Utf8View, false),
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("day", DataType::Date32, true),
        ]);
        let back = schema_from_hex(&schema_to_hex(&schema)).unwrap();
        assert_eq!(back.as_ref(), &schema);
        assert!(schema_from_hex("zz").is_none());
    }
}
