//! The engine: runs a [`Plan`]'s stages in order, checks each output, publishes, and writes the
//! run manifest. See [`crate::publish`] for what readers see at each step.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;
use datafusion::prelude::SessionContext;
use futures::{StreamExt as _, TryStreamExt as _};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use url::Url;

use crate::checks;
use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseOptions};
use crate::manifest::{OutputReport, PublishReport, RunManifest, StageReport, Status};
use crate::plan::{Plan, PlannedStage};
use crate::pointer;
use crate::publish::{self, PublishRequest};
use crate::stage::{Observer, RunInfo, StageContext};
use crate::storage;
use crate::table::TableInfo;
use object_store::ObjectStoreExt as _;

/// Knobs of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Keep the run's work tables after it ends (for debugging a stage).
    pub keep_work: bool,
    /// Rebuild incremental outputs from all inputs (see [`RunInfo::full_refresh`]).
    pub full_refresh: bool,
    /// Stops the run (SIGINT, SIGTERM): the running stage is dropped, nothing more is
    /// published, and the manifest says `interrupted`.
    pub cancel: CancellationToken,
    /// How the run takes its output's lease.
    pub lease: LeaseOptions,
}

/// The result of a run: its manifest, and the error when it failed.
pub struct RunOutcome {
    pub manifest: RunManifest,
    pub manifest_url: Option<Url>,
    pub error: Option<Error>,
}

/// A new run id: sortable by start time, unique across concurrent runs.
pub fn new_run_id(now: chrono::DateTime<Utc>) -> String {
    let suffix: u32 = rand::rng().random();
    format!("{}-{suffix:08x}", now.format("%Y%m%dT%H%M%SZ"))
}

pub async fn run(
    ctx: &SessionContext,
    plan: &Plan,
    observer: &dyn Observer,
    options: &RunOptions,
) -> RunOutcome {
    let started_at = Utc::now();
    let clock = Instant::now();
    let info = RunInfo {
        run_id: new_run_id(started_at),
        pipeline: plan.name.clone(),
        pipeline_file: plan.file.clone(),
        started_at,
        vars: plan.vars.clone(),
        full_refresh: options.full_refresh,
    };
    // Everything the run writes besides its published tables and its manifest lives under
    // <runs>/<run_id>/, deleted when the run ends.
    let run_dir = storage::as_dir(&storage::join(&plan.runs, &info.run_id));
    let work = storage::as_dir(&storage::join(&run_dir, "work"));
    tracing::info!(run_id = %info.run_id, pipeline = %plan.name, "run started");
    observer.run_started(&info);
    // Every event inside the run carries its id (the JSON log's `run_id`). At error level so
    // that the span exists whatever the log filter lets through.
    let span = tracing::error_span!("run", run_id = %info.run_id);

    let tables = Mutex::new(BTreeMap::new());
    let mut reports = Vec::new();
    let mut published = Vec::new();
    let result = async {
        storage::configure(ctx, &plan.storage)?;
        // One run at a time on an output (crate::lease).
        let lease = tokio::select! {
            lease = Lease::acquire(ctx, &plan.runs, &info.run_id, &options.lease) => lease?,
            () = options.cancel.cancelled() => return Err(Error::Cancelled),
        };
        let stages = run_stages(
            ctx,
            plan,
            observer,
            &info,
            &work,
            &tables,
            &lease,
            &mut reports,
            &mut published,
        )
        .instrument(span.clone());
        // Dropping the stages' future stops the running stage where it waits; what it wrote
        // stays under the run's work prefix, deleted below.
        let result = tokio::select! {
            result = stages => result,
            () = options.cancel.cancelled() => Err(Error::Cancelled),
        };
        // Every table is committed: point readers at this run's versions, while the lease
        // still keeps other runs out.
        let result = async {
            result?;
            lease.check()?;
            pointer::write(ctx, &plan.runs, &info.run_id, &plan.name, &published).await?;
            Ok(())
        }
        .await;
        lease.release().await;
        result
    }
    .await;
    // Stages never reached are listed too, so the manifest shows the whole plan; the one an
    // interruption stopped says so.
    let interrupted = matches!(result, Err(Error::Cancelled));
    for (i, s) in plan.stages.iter().skip(reports.len()).enumerate() {
        let mut report = StageReport::skipped(&s.spec.id, &s.spec.kind);
        if interrupted && i == 0 {
            report.status = Status::Interrupted;
            report.error_class = Some(crate::ErrorClass::Interrupted);
        }
        reports.push(report);
    }
    if !options.keep_work
        && let Err(e) = storage::delete_prefix(ctx, &run_dir).await
    {
        tracing::warn!("could not delete the run's work tables at {run_dir}: {e}");
    }

    let finished_at = Utc::now();
    let manifest = RunManifest {
        manifest_version: 1,
        run_id: info.run_id.clone(),
        pipeline: plan.name.clone(),
        pipeline_file: plan.file.display().to_string(),
        segflow_version: env!("CARGO_PKG_VERSION").to_string(),
        engine: crate::session::engine(ctx).name.clone(),
        status: match &result {
            Ok(()) => Status::Succeeded,
            Err(Error::Cancelled) => Status::Interrupted,
            Err(_) => Status::Failed,
        },
        error: result.as_ref().err().map(|e| crate::error::chain(e)),
        error_class: result.as_ref().err().map(Error::class),
        vars: plan.vars.clone(),
        started_at,
        finished_at,
        duration_ms: clock.elapsed().as_millis() as u64,
        peak_rss_bytes: reports
            .iter()
            .filter_map(|r| r.peak_rss_bytes)
            .chain(crate::resident::process_peak_bytes())
            .max(),
        stages: reports,
        published,
    };
    let manifest_url = storage::join(&plan.runs, &format!("{}.json", info.run_id));
    let written = write_manifest(ctx, &manifest_url, &manifest).await;
    let (manifest_url, error) = match (written, result) {
        (Ok(()), r) => (Some(manifest_url), r.err()),
        (Err(e), Ok(())) => (None, Some(e)),
        (Err(e), Err(run_err)) => {
            tracing::error!("could not write the run manifest: {e}");
            (None, Some(run_err))
        }
    };
    RunOutcome {
        manifest,
        manifest_url,
        error,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_stages(
    ctx: &SessionContext,
    plan: &Plan,
    observer: &dyn Observer,
    info: &RunInfo,
    work: &Url,
    tables: &Mutex<BTreeMap<String, TableInfo>>,
    lease: &Lease,
    reports: &mut Vec<StageReport>,
    published: &mut Vec<PublishReport>,
) -> Result<()> {
    // Run tables an export will append to a table or overwrite it with are written into it
    // (write once); the first such request for a table decides where, others copy from it.
    let mut targets: BTreeMap<String, PublishRequest> = BTreeMap::new();
    for request in plan.stages.iter().flat_map(|s| s.stage.publish_targets()) {
        if publish::writes_directly(&request) && !targets.contains_key(&request.table) {
            targets.insert(request.table.clone(), request);
        }
    }
    let written = Mutex::new(BTreeMap::new());
    let mut requests: Vec<PublishRequest> = Vec::new();
    for planned in &plan.stages {
        let (report, result) = run_stage(
            ctx, planned, observer, info, work, tables, &targets, &written,
        )
        .await;
        observer.stage_finished(&report);
        reports.push(report);
        requests.extend(result?);
    }
    let written = written.into_inner().expect("written lock");
    let written = &written;
    // Tables are published side by side: delta-rs encodes each table's files on one thread.
    // Requests for the same table (several stages appending to one quarantine) stay in order
    // in one queue, as each is a commit on top of the last.
    let mut queues: Vec<Vec<(usize, &PublishRequest)>> = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        match queues.iter_mut().find(|q| q[0].1.url == request.url) {
            Some(queue) => queue.push((i, request)),
            None => queues.push(vec![(i, request)]),
        }
    }
    let concurrency = ctx.copied_config().target_partitions().max(1);
    let mut reports: Vec<(usize, PublishReport)> =
        futures::stream::iter(queues.into_iter().map(|queue| async move {
            let mut reports = Vec::new();
            for (i, request) in queue {
                // A run that lost its lease commits nothing more: another run is writing.
                lease.check()?;
                reports.push((
                    i,
                    publish_one(ctx, request, observer, info, tables, written).await?,
                ));
            }
            Ok::<_, Error>(reports)
        }))
        .buffer_unordered(concurrency)
        .try_concat()
        .await?;
    reports.sort_by_key(|(i, _)| *i);
    published.extend(reports.into_iter().map(|(_, r)| r));
    Ok(())
}

async fn publish_one(
    ctx: &SessionContext,
    request: &PublishRequest,
    observer: &dyn Observer,
    info: &RunInfo,
    tables: &Mutex<BTreeMap<String, TableInfo>>,
    written: &BTreeMap<String, publish::WrittenFiles>,
) -> Result<PublishReport> {
    let rows = tables
        .lock()
        .expect("tables lock")
        .get(&request.table)
        .map(|t| t.rows)
        .ok_or_else(|| {
            Error::Internal(format!(
                "publish of `{}`, which the run did not produce",
                request.table
            ))
        })?;
    observer.publish_started(request.display_name(), &request.url);
    tracing::info!(table = %request.display_name(), url = %request.url, "publishing");
    // Files written into this very table are committed as they are; any other request (or
    // a table whose schema would change) goes through delta-rs's write.
    let direct = match written.get(&request.table) {
        Some(w) if w.url == request.url && publish::writes_directly(request) => {
            publish::commit_written(ctx, request, w, info, rows).await?
        }
        _ => None,
    };
    let report = match direct {
        Some(report) => report,
        None => publish::publish(ctx, request, info, rows).await?,
    };
    observer.published(&report);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_stage(
    ctx: &SessionContext,
    planned: &PlannedStage,
    observer: &dyn Observer,
    info: &RunInfo,
    work: &Url,
    tables: &Mutex<BTreeMap<String, TableInfo>>,
    targets: &BTreeMap<String, PublishRequest>,
    written: &Mutex<BTreeMap<String, publish::WrittenFiles>>,
) -> (StageReport, Result<Vec<PublishRequest>>) {
    let spec = &planned.spec;
    let started_at = Utc::now();
    let clock = Instant::now();
    let resident = crate::resident::track();
    observer.stage_started(&spec.id, &spec.kind);
    tracing::info!(stage = %spec.id, kind = %spec.kind, "stage started");
    let cx = StageContext {
        ctx,
        stage_id: &spec.id,
        run: info,
        work,
        observer,
        tables,
        publishes: Mutex::new(Vec::new()),
        metrics: Mutex::new(BTreeMap::new()),
        targets,
        written,
        workers: Mutex::new(Default::default()),
    };
    let engine = crate::session::engine(ctx);
    // Jobs of earlier work (another stage's publish, say) are not this stage's.
    engine.take_jobs();
    let inputs: BTreeMap<String, u64> = planned
        .inputs
        .iter()
        .map(|t| (t.clone(), cx.rows_of(t).unwrap_or(0)))
        .collect();

    let mut check_reports = Vec::new();
    let result = async {
        planned.stage.run(&cx).await?;
        for output in &planned.outputs {
            if cx.rows_of(output).is_none() {
                return Err(TableInfo::missing(&spec.id, output));
            }
        }
        // A stage's `checks` are on its main output (the YAML `output`, or its first output);
        // side outputs such as an ingest stage's quarantine have their own fixed shape.
        if let Some(main) = spec.output.as_ref().or(planned.outputs.first()) {
            check_reports = checks::run_checks(&cx, main, &spec.checks).await?;
        }
        Ok(())
    }
    .instrument(tracing::error_span!("stage", stage = %spec.id))
    .await;

    let outputs: BTreeMap<String, OutputReport> = {
        let t = tables.lock().expect("tables lock");
        planned
            .outputs
            .iter()
            .filter_map(|o| {
                t.get(o).map(|i| {
                    (
                        o.clone(),
                        OutputReport {
                            rows: i.rows,
                            path: i.url.to_string(),
                        },
                    )
                })
            })
            .collect()
    };
    let rows_in = inputs.values().sum();
    let rows_out = outputs.values().map(|o| o.rows).sum();
    let report = StageReport {
        id: spec.id.clone(),
        kind: spec.kind.clone(),
        status: if result.is_ok() {
            Status::Succeeded
        } else {
            Status::Failed
        },
        started_at: Some(started_at),
        duration_ms: clock.elapsed().as_millis() as u64,
        peak_rss_bytes: resident.map(|r| r.peak()),
        inputs,
        rows_in,
        rows_out,
        outputs,
        checks: check_reports,
        metrics: cx.metrics.lock().expect("metrics lock").clone(),
        workers: cx
            .workers
            .lock()
            .expect("workers lock")
            .iter()
            .cloned()
            .collect(),
        engine_jobs: engine.take_jobs(),
        error: result.as_ref().err().map(|e| crate::error::chain(e)),
        error_class: result.as_ref().err().map(Error::class),
    };
    match &result {
        Ok(()) => {
            tracing::info!(stage = %spec.id, rows_out, ms = report.duration_ms, "stage finished")
        }
        Err(e) => tracing::error!(stage = %spec.id, "stage failed: {e}"),
    }
    let requests = cx.publishes.into_inner().expect("publishes lock");
    (report, result.map(|()| requests))
}

async fn write_manifest(ctx: &SessionContext, url: &Url, manifest: &RunManifest) -> Result<()> {
    let body = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::Internal(format!("manifest to JSON: {e}")))?;
    let store = storage::store_for(ctx, url)?;
    store
        .put(&storage::store_path(url)?, body.into())
        .await
        .map_err(|e| Error::Storage {
            location: url.to_string(),
            message: "cannot write the run manifest".into(),
            source: Some(e),
        })?;
    Ok(())
}
