//! Commits whose answer was lost.
//!
//! A Delta commit is a conditional put of `_delta_log/<version>.json`. When the store applied
//! it but the answer never came back (a dropped connection), the client's retry of the same put
//! is refused because the file now exists, and the writer takes its own commit for another
//! writer's: delta-rs would then commit the same actions again at the next version (a second
//! version, or a conflict although the data is in). segflow marks every commit with a Delta
//! `txn` action of its own (`app_id`: `segflow:<run_id>:<run table>`), turns delta-rs's retries
//! off, and after any failed commit reads the log for that mark: found, the commit landed, at
//! that version; not found, it failed.

use datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use url::Url;

use crate::error::{Error, Result};
use crate::stage::RunInfo;
use crate::storage;

/// The application id that marks this run's commit of run table `table`.
pub(crate) fn app_id(run: &RunInfo, table: &str) -> String {
    format!("segflow:{}:{table}", run.run_id)
}

/// The `txn` action for a run's commit of `table` (each run table is committed once).
pub(crate) fn transaction(run: &RunInfo, table: &str) -> Transaction {
    Transaction::new(app_id(run, table), 0)
}

/// The properties of every segflow commit: the run in `commitInfo`, the run's `txn`, and no
/// retry by delta-rs. A commit refused because its version exists is, under the output's lease,
/// almost always this run's own whose answer was lost; delta-rs would commit the same actions
/// again at the next version. segflow reads the log instead ([`landed`]); a version another
/// writer took fails the run (exit 4), and the next run starts from the new version.
pub(crate) fn properties(
    request: &super::PublishRequest,
    run: &RunInfo,
    txn: &Transaction,
) -> CommitProperties {
    CommitProperties::default()
        .with_metadata(super::commit_metadata(request, run))
        .with_application_transaction(txn.clone())
        .with_max_retries(0)
}

/// The version of the table at `url` whose commit carries `app_id`, among the versions after
/// `after` (all of them when the table did not exist): the commit that landed although its
/// writer heard it fail.
pub(crate) async fn landed(
    ctx: &SessionContext,
    url: &Url,
    after: Option<u64>,
    app_id: &str,
) -> Result<Option<u64>> {
    let log = storage::as_dir(&storage::join(url, "_delta_log"));
    let store = storage::store_for(ctx, &log)?;
    let fail = |e| Error::Storage {
        location: log.to_string(),
        message: "cannot read the Delta log to reconcile a commit".into(),
        source: Some(e),
    };
    let prefix = storage::store_path(&log)?;
    let metas: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(fail)?;
    let mut versions: Vec<(u64, object_store::path::Path)> = metas
        .into_iter()
        .filter_map(|m| {
            let v = m.location.filename()?.strip_suffix(".json")?.parse().ok()?;
            Some((v, m.location))
        })
        .filter(|(v, _)| after.is_none_or(|a| *v > a))
        .collect();
    versions.sort();
    for (version, path) in versions {
        let bytes = store
            .get(&path)
            .await
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail)?;
        let ours = String::from_utf8_lossy(&bytes).lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|action| action["txn"]["appId"] == app_id)
        });
        if ours {
            return Ok(Some(version));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_is_found_by_its_transaction_mark() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let commit = |v: u64, app: &str| {
            let lines = [
                r#"{"commitInfo":{"operation":"WRITE"}}"#.to_string(),
                format!(r#"{{"txn":{{"appId":"{app}","version":0}}}}"#),
            ];
            std::fs::write(log.join(format!("{v:020}.json")), lines.join("\n")).unwrap();
        };
        commit(0, "segflow:r1:t");
        commit(1, "segflow:r2:t");
        let url = Url::from_directory_path(dir.path()).unwrap();
        let ctx = SessionContext::new();
        assert_eq!(
            landed(&ctx, &url, None, "segflow:r2:t").await.unwrap(),
            Some(1)
        );
        assert_eq!(
            landed(&ctx, &url, Some(0), "segflow:r1:t").await.unwrap(),
            None
        );
        assert_eq!(
            landed(&ctx, &url, None, "segflow:r3:t").await.unwrap(),
            None
        );
    }
}
