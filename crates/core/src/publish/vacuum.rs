//! `segflow vacuum`: what runs leave behind, removed once it is old enough.
//!
//! - Data files no version needs any more: files an overwrite replaced, and files that failed
//!   or killed runs wrote into a table's location but never committed (Delta's `full` vacuum),
//!   older than the retention. Files of the version `_published.json` names are always kept,
//!   so readers of the last consistent run are never broken.
//! - The folders of runs that did not succeed (`<runs>/<run_id>/`: failed, interrupted or
//!   killed runs keep theirs for `run --resume`), whose run started before the retention.
//!
//! A vacuum takes the output's lease like a run, so nothing it removes belongs to a run going
//! on. It is a dry run unless asked to delete.

use std::time::Duration;

use chrono::Utc;
use datafusion::prelude::SessionContext;
use deltalake::operations::vacuum::VacuumMode;
use url::Url;

use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseOptions};
use crate::{pointer, storage};

/// What a vacuum removed, or would remove in a dry run.
#[derive(Debug, Default, serde::Serialize)]
pub struct VacuumReport {
    pub dry_run: bool,
    /// Per table of `_published.json`: the data files removed.
    pub tables: Vec<(String, Vec<String>)>,
    /// Work folders of ended runs.
    pub work_folders: Vec<String>,
}

/// Vacuums the output whose runs folder is `runs`: see the module's text.
pub async fn vacuum(
    ctx: &SessionContext,
    runs: &Url,
    older_than: Duration,
    dry_run: bool,
) -> Result<VacuumReport> {
    let id = format!("vacuum-{}", crate::runner::new_run_id(Utc::now()));
    let lease = Lease::acquire(ctx, runs, &id, &LeaseOptions::default()).await?;
    let result = vacuum_held(ctx, runs, older_than, dry_run, &lease).await;
    lease.release().await;
    result
}

async fn vacuum_held(
    ctx: &SessionContext,
    runs: &Url,
    older_than: Duration,
    dry_run: bool,
    lease: &Lease,
) -> Result<VacuumReport> {
    let Some((published, _)) = pointer::read(ctx, runs).await? else {
        return Err(Error::Invalid {
            file: runs.path().into(),
            message: format!(
                "no {} under {runs}: nothing was published here, or not by this version of \
                 segflow; check the output's location",
                pointer::FILE
            ),
        });
    };
    let retention = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let mut report = VacuumReport {
        dry_run,
        ..Default::default()
    };
    for (name, entry) in &published.tables {
        lease.check()?;
        let url = storage::parse_location(&entry.url)?;
        let fail = |source| Error::Publish {
            table: name.clone(),
            url: entry.url.clone(),
            source: Box::new(source),
        };
        let table = super::open_or_new(ctx, &url).await?.map_err(fail)?;
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_keep_versions(&[entry.version])
            .with_dry_run(dry_run)
            .await
            .map_err(fail)?;
        report.tables.push((name.clone(), metrics.files_deleted));
    }
    // Work folders: `<runs>/<run_id>/`, the run id starting with the UTC second it started.
    let cutoff = Utc::now() - retention;
    let mut folders = std::collections::BTreeSet::new();
    for file in storage::list_files(ctx, &storage::as_dir(runs)).await? {
        let rel = file
            .url
            .path()
            .strip_prefix(runs.path())
            .unwrap_or_default();
        let rel = rel.trim_start_matches('/');
        let Some((folder, _)) = rel.split_once('/') else {
            continue;
        };
        let started = folder
            .get(..16)
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").ok());
        if started.is_some_and(|t| t.and_utc() < cutoff) {
            folders.insert(folder.to_string());
        }
    }
    for folder in folders {
        let url = storage::as_dir(&storage::join(runs, &folder));
        if !dry_run {
            lease.check()?;
            storage::delete_prefix(ctx, &url).await?;
        }
        report.work_folders.push(url.to_string());
    }
    Ok(report)
}
