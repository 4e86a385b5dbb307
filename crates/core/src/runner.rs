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
use crate::fingerprint::Fingerprint;
use crate::lease::{Lease, LeaseOptions};
use crate::manifest::{OutputReport, PublishReport, RunManifest, StageReport, Status};
use crate::plan::{Plan, PlannedStage};
use crate::pointer;
use crate::publish::{self, PublishRequest};
use crate::resume::{self, Resume};
use crate::stage::{Observer, RunInfo, StageContext};
use crate::storage;
use crate::table::TableInfo;

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
    /// Another attempt of a run that did not succeed ([`crate::resume::open`]).
    pub resume: Option<Resume>,
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
    let resume = options.resume.as_ref();
    let info = RunInfo {
        run_id: resume.map_or_else(|| new_run_id(started_at), |r| r.run_id.clone()),
        pipeline: plan.name.clone(),
        pipeline_file: plan.file.clone(),
        started_at: resume.map_or(started_at, |r| r.started_at),
        vars: plan.vars.clone(),
        full_refresh: options.full_refresh,
    };
    let attempt = resume.map_or(1, |r| r.attempt);
    // Everything the run writes besides its published tables and its manifest lives under
    // <runs>/<run_id>/: deleted when the run succeeds, kept for `run --resume` otherwise.
    let run_dir = resume::run_dir(&plan.runs, &info.run_id);
    let work = storage::as_dir(&storage::join(&run_dir, "work"));
    tracing::info!(run_id = %info.run_id, pipeline = %plan.name, attempt, "run started");
    observer.run_started(&info);
    // Every event inside the run carries its id (the JSON log's `run_id`). At error level so
    // that the span exists whatever the log filter lets through.
    let span = tracing::error_span!("run", run_id = %info.run_id);

    let tables = Mutex::new(BTreeMap::new());
    // Whether this attempt may write under the run id: a new run always; a resumed one once it
    // holds the lease and has found the run still unfinished. Until then the manifest there is
    // another attempt's.
    let owns_run = std::sync::atomic::AtomicBool::new(resume.is_none());
    let mut reports = Vec::new();
    let mut published = Vec::new();
    let result = async {
        storage::configure(ctx, &plan.storage)?;
        // One run at a time on an output (crate::lease).
        let lease = tokio::select! {
            lease = Lease::acquire(ctx, &plan.runs, &info.run_id, &options.lease) => lease?,
            () = options.cancel.cancelled() => return Err(Error::Cancelled),
        };
        // A resumed run reads what the earlier attempt left again, now that the lease keeps it
        // out: it may have gone on (even succeeded, or begun publishing) since the first read.
        let refreshed = match resume {
            Some(r) => match resume::open(ctx, plan, &r.run_id).await {
                Ok(fresh) => Some(fresh),
                Err(e) => {
                    lease.release().await;
                    return Err(e);
                }
            },
            None => None,
        };
        owns_run.store(true, std::sync::atomic::Ordering::Relaxed);
        // What a later attempt needs, written once the lease keeps an earlier attempt out.
        let record = resume::RunRecord {
            run_id: info.run_id.clone(),
            pipeline: plan.name.clone(),
            started_at: info.started_at,
            attempt,
            attempt_started_at: started_at,
            previous_attempts: resume
                .map(|r| r.previous_attempts.clone())
                .unwrap_or_default(),
        };
        let record_url = storage::join(&run_dir, "run.json");
        if let Err(e) = storage::put_json(ctx, &record_url, &record, "run record").await {
            lease.release().await;
            return Err(e);
        }
        let scope = Scope {
            ctx,
            observer,
            info: &info,
            work: &work,
            run_dir: &run_dir,
            tables: &tables,
            lease: &lease,
            resume: refreshed.as_ref(),
        };
        let stages =
            run_stages(&scope, plan, &mut reports, &mut published).instrument(span.clone());
        // Dropping the stages' future stops the running stage where it waits; what it wrote
        // stays under the run's work prefix, deleted below.
        let result = tokio::select! {
            result = stages => result,
            () = options.cancel.cancelled() => Err(Error::Cancelled),
        };
        // Every table is committed: point readers at this run's versions, while the lease
        // still keeps other runs out; then the stages that act on what was published.
        let result = async {
            result?;
            lease.check()?;
            pointer::write(ctx, &plan.runs, &info.run_id, &plan.name, &published).await?;
            let after = run_after_publish(&scope, plan, &mut reports).instrument(span.clone());
            tokio::select! {
                result = after => result,
                () = options.cancel.cancelled() => Err(Error::Cancelled),
            }
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
    // A run that did not succeed keeps its folder for `run --resume` (until `segflow vacuum`).
    if result.is_ok()
        && !options.keep_work
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
        attempt,
        previous_attempts: resume
            .map(|r| r.previous_attempts.clone())
            .unwrap_or_default(),
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
    let written = if owns_run.load(std::sync::atomic::Ordering::Relaxed) {
        Some(storage::put_json(ctx, &manifest_url, &manifest, "run manifest").await)
    } else {
        None
    };
    let (manifest_url, error) = match (written, result) {
        (Some(Ok(())), r) => (Some(manifest_url), r.err()),
        (None, r) => (None, r.err()),
        (Some(Err(e)), Ok(())) => (None, Some(e)),
        (Some(Err(e)), Err(run_err)) => {
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

/// What every stage of one run shares.
struct Scope<'a> {
    ctx: &'a SessionContext,
    observer: &'a dyn Observer,
    info: &'a RunInfo,
    /// `<runs>/<run_id>/work/`: the run tables.
    work: &'a Url,
    /// `<runs>/<run_id>/`: the run's folder (checkpoints, `publishing.json`).
    run_dir: &'a Url,
    tables: &'a Mutex<BTreeMap<String, TableInfo>>,
    lease: &'a Lease,
    resume: Option<&'a Resume>,
}

async fn run_stages(
    scope: &Scope<'_>,
    plan: &Plan,
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
    // Each run table's fingerprint: its stage's, which the stages reading it build on.
    let mut prints: BTreeMap<String, String> = BTreeMap::new();
    let mut requests: Vec<PublishRequest> = Vec::new();
    for planned in plan.stages.iter().filter(|s| !s.stage.after_publish()) {
        let (report, result) = run_stage(scope, planned, &targets, &written, &prints).await;
        scope.observer.stage_finished(&report);
        if let Some(print) = &report.fingerprint {
            for output in &planned.outputs {
                prints.insert(output.clone(), print.clone());
            }
        }
        reports.push(report);
        requests.extend(result?);
    }
    let written = written.into_inner().expect("written lock");
    let written = &written;
    // Where each table stood before this run's first commit, for a later attempt to find the
    // commits this one made (crate::resume); an earlier attempt's record stands.
    let mut before = scope
        .resume
        .map(|r| r.publishing.clone())
        .unwrap_or_default();
    for request in &requests {
        if !before.contains_key(request.url.as_str()) {
            let version = publish::latest_version(scope.ctx, &request.url).await?;
            before.insert(request.url.to_string(), version);
        }
    }
    let publishing = storage::join(scope.run_dir, "publishing.json");
    storage::put_json(
        scope.ctx,
        &publishing,
        &before,
        "record of versions before publishing",
    )
    .await?;
    let before = &before;
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
    let concurrency = scope.ctx.copied_config().target_partitions().max(1);
    let mut reports: Vec<(usize, PublishReport)> =
        futures::stream::iter(queues.into_iter().map(|queue| async move {
            let mut reports = Vec::new();
            for (i, request) in queue {
                // A run that lost its lease commits nothing more: another run is writing.
                scope.lease.check()?;
                reports.push((i, publish_one(scope, request, written, before).await?));
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

/// Runs the stages that act on the published tables ([`crate::stage::Stage::after_publish`]), in plan
/// order: they are the plan's last stages.
async fn run_after_publish(
    scope: &Scope<'_>,
    plan: &Plan,
    reports: &mut Vec<StageReport>,
) -> Result<()> {
    let (targets, written, prints) = (
        BTreeMap::new(),
        Mutex::new(BTreeMap::new()),
        BTreeMap::new(),
    );
    for planned in plan.stages.iter().filter(|s| s.stage.after_publish()) {
        let (report, result) = run_stage(scope, planned, &targets, &written, &prints).await;
        scope.observer.stage_finished(&report);
        reports.push(report);
        result?;
    }
    Ok(())
}

async fn publish_one(
    scope: &Scope<'_>,
    request: &PublishRequest,
    written: &BTreeMap<String, publish::WrittenFiles>,
    before: &BTreeMap<String, Option<u64>>,
) -> Result<PublishReport> {
    let (ctx, info) = (scope.ctx, scope.info);
    let rows = scope
        .tables
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
    scope
        .observer
        .publish_started(request.display_name(), &request.url);
    tracing::info!(table = %request.display_name(), url = %request.url, "publishing");
    // An earlier attempt of this run that failed while publishing may have committed this
    // request: its commit carries the run's mark. Committing again would add its rows twice.
    if scope
        .resume
        .is_some_and(|r| r.publishing.contains_key(request.url.as_str()))
    {
        let previous = before.get(request.url.as_str()).copied().flatten();
        let mark = publish::reconcile::app_id(info, &request.table);
        if let Some(version) =
            publish::reconcile::landed(ctx, &request.url, previous, &mark).await?
        {
            tracing::info!(table = %request.display_name(), version, "committed by an earlier attempt");
            let report = PublishReport {
                table: request.display_name().to_string(),
                url: request.url.to_string(),
                previous_version: version.checked_sub(1),
                version,
                rows,
            };
            scope.observer.published(&report);
            return Ok(report);
        }
    }
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
    scope.observer.published(&report);
    Ok(report)
}

/// What a stage's tables are a function of ([`crate::fingerprint`]): its kind and resolved
/// keys, where its tables are written, its input tables' fingerprints (`prints`), and what the
/// stage itself adds (files it was built from, what it reads outside the run).
async fn fingerprint(
    scope: &Scope<'_>,
    planned: &PlannedStage,
    targets: &BTreeMap<String, PublishRequest>,
    prints: &BTreeMap<String, String>,
) -> Result<String> {
    let spec = &planned.spec;
    let mut f = Fingerprint::new();
    f.add("kind", &spec.kind);
    f.add("id", &spec.id);
    // The keys in file order, vars expanded.
    let keys = serde_yaml::to_string(&spec.config)
        .map_err(|e| Error::Internal(format!("stage `{}` keys to YAML: {e}", spec.id)))?;
    f.add("keys", keys);
    f.add_json("checks", &spec.checks)?;
    f.add_json("output", &spec.output)?;
    f.add_json("full_refresh", &scope.info.full_refresh)?;
    for output in &planned.outputs {
        if let Some(t) = targets.get(output) {
            f.add_json(
                "written into",
                &(output, t.url.as_str(), &t.partition_by, t.mode),
            )?;
        }
    }
    for input in &planned.inputs {
        f.add("input", input);
        f.add(
            "input fingerprint",
            prints.get(input).map_or("", String::as_str),
        );
    }
    planned
        .stage
        .fingerprint(scope.ctx, scope.info, &mut f)
        .await?;
    Ok(f.finish())
}

async fn run_stage(
    scope: &Scope<'_>,
    planned: &PlannedStage,
    targets: &BTreeMap<String, PublishRequest>,
    written: &Mutex<BTreeMap<String, publish::WrittenFiles>>,
    prints: &BTreeMap<String, String>,
) -> (StageReport, Result<Vec<PublishRequest>>) {
    let (ctx, observer, tables) = (scope.ctx, scope.observer, scope.tables);
    let spec = &planned.spec;
    let started_at = Utc::now();
    let clock = Instant::now();
    let resident = crate::resident::track();
    observer.stage_started(&spec.id, &spec.kind);
    let print = fingerprint(scope, planned, targets, prints).await;
    if let (Ok(print), Some(resume)) = (&print, scope.resume)
        && let Some(checkpoint) = resume.checkpoints.get(&spec.id)
        && checkpoint.fingerprint == *print
    {
        match reuse(scope, checkpoint, written).await {
            Ok(Some(report)) => return (report, Ok(checkpoint.publishes.clone())),
            Ok(None) => {}
            Err(e) => {
                let mut report = StageReport::skipped(&spec.id, &spec.kind);
                report.status = Status::Failed;
                report.started_at = Some(started_at);
                report.error = Some(crate::error::chain(&e));
                report.error_class = Some(e.class());
                return (report, Err(e));
            }
        }
    }
    tracing::info!(stage = %spec.id, kind = %spec.kind, "stage started");
    let cx = StageContext {
        ctx,
        stage_id: &spec.id,
        run: scope.info,
        work: scope.work,
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
        let print = print?;
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
        Ok(print)
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
        fingerprint: result.as_ref().ok().cloned(),
        reused: false,
    };
    match &result {
        Ok(_) => {
            tracing::info!(stage = %spec.id, rows_out, ms = report.duration_ms, "stage finished")
        }
        Err(e) => tracing::error!(stage = %spec.id, "stage failed: {e}"),
    }
    let requests = cx.publishes.into_inner().expect("publishes lock");
    if result.is_ok() {
        checkpoint(scope, planned, &report, &requests, written).await;
    }
    (report, result.map(|_| requests))
}

/// Registers the tables an earlier attempt's stage wrote, as the stage would have: its report
/// (marked reused), or `None` when some of its files are gone and the stage must run again.
async fn reuse(
    scope: &Scope<'_>,
    checkpoint: &resume::Checkpoint,
    written: &Mutex<BTreeMap<String, publish::WrittenFiles>>,
) -> Result<Option<StageReport>> {
    let Some(restored) = resume::restore(scope.ctx, checkpoint).await? else {
        return Ok(None);
    };
    for (info, files) in restored {
        let name = info.name.clone();
        match files {
            Some(w) => written
                .lock()
                .expect("written lock")
                .insert(name.clone(), w),
            None => written.lock().expect("written lock").remove(&name),
        };
        scope.tables.lock().expect("tables lock").insert(name, info);
    }
    let mut report = checkpoint.report.clone();
    report.reused = true;
    tracing::info!(stage = %report.id, "stage reused: an earlier attempt's tables, fingerprint unchanged");
    // This attempt's checkpoint is the earlier one's: a later attempt may reuse it too.
    write_checkpoint(scope, &report.id, checkpoint).await;
    Ok(Some(report))
}

/// Saves what a later attempt needs to reuse a stage that passed: its tables (its outputs and
/// any table it asked to publish), its publish requests and its report. A stage with a table
/// held in memory is not saved (a later attempt runs it again), nor is failing to save one
/// the run's failure.
async fn checkpoint(
    scope: &Scope<'_>,
    planned: &PlannedStage,
    report: &StageReport,
    requests: &[PublishRequest],
    written: &Mutex<BTreeMap<String, publish::WrittenFiles>>,
) {
    let Some(fingerprint) = report.fingerprint.clone() else {
        return;
    };
    let mut names: Vec<&String> = planned.outputs.iter().collect();
    names.extend(requests.iter().map(|r| &r.table));
    names.sort();
    names.dedup();
    let saved: Option<Vec<_>> = {
        let tables = scope.tables.lock().expect("tables lock");
        let written = written.lock().expect("written lock");
        names
            .iter()
            .map(|n| resume::save_table(tables.get(*n)?, written.get(*n)))
            .collect()
    };
    let Some(tables) = saved else {
        tracing::debug!(stage = %report.id, "not checkpointed: a table is held in memory");
        return;
    };
    let checkpoint = resume::Checkpoint {
        fingerprint,
        tables,
        publishes: requests.to_vec(),
        report: report.clone(),
    };
    write_checkpoint(scope, &report.id, &checkpoint).await;
}

async fn write_checkpoint(scope: &Scope<'_>, stage: &str, checkpoint: &resume::Checkpoint) {
    let url = storage::join(
        &storage::as_dir(&storage::join(scope.run_dir, "stages")),
        &format!("{stage}.json"),
    );
    if let Err(e) = storage::put_json(scope.ctx, &url, checkpoint, "stage checkpoint").await {
        tracing::warn!(
            stage,
            "could not save the stage's checkpoint (a resumed run will run it again): {e}"
        );
    }
}
