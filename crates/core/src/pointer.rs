//! `<runs>/_published.json`: the run whose tables readers should read together, and the Delta
//! version of each.
//!
//! Tables commit one by one, so between two commits of a run a reader could see
//! customer_segments from the new run and segment_profiles from the old one. After a run's last
//! commit it writes this pointer; a reader that needs one consistent run (the Flight SQL server,
//! the sync jobs, the report, an outside Delta reader) reads the pointer and then each table at
//! the version it names. A table the run did not commit (unchanged staging) keeps the entry of
//! the pointer before.
//!
//! The pointer is replaced with a conditional put on the version read before (`If-Match`), so
//! it never goes back to an older run; stores without conditional updates (local files) replace
//! it by an atomic rename, and the output's lease keeps other writers out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::manifest::PublishReport;
use crate::storage;

/// The file's name under the runs folder.
pub const FILE: &str = "_published.json";

/// The pointer's layout version.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pointer {
    pub pointer_version: u32,
    /// The run whose tables these are (for tables it did not commit, an earlier run's).
    pub run_id: String,
    pub pipeline: String,
    pub published_at: DateTime<Utc>,
    /// Table name -> where it is and the Delta version to read.
    pub tables: BTreeMap<String, PointerTable>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointerTable {
    pub url: String,
    pub version: u64,
    /// The run that committed this version.
    pub run_id: String,
}

/// Where the pointer of the runs folder `runs` is.
pub fn location(runs: &Url) -> Url {
    storage::join(runs, FILE)
}

/// The pointer under `runs` and its store version, or `None` before the first publish.
pub async fn read(
    ctx: &datafusion::prelude::SessionContext,
    runs: &Url,
) -> Result<Option<(Pointer, UpdateVersion)>> {
    let url = location(runs);
    let store = storage::store_for(ctx, &url)?;
    let fail = |e| Error::Storage {
        location: url.to_string(),
        message: "cannot read the publish pointer".into(),
        source: Some(e),
    };
    let got = match store.get(&storage::store_path(&url)?).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got.bytes().await.map_err(fail)?;
    let pointer = serde_json::from_slice(&bytes).map_err(|e| Error::Storage {
        location: url.to_string(),
        message: format!("the publish pointer is not valid JSON ({e})"),
        source: None,
    })?;
    Ok(Some((pointer, version)))
}

/// Points readers at the tables run `run_id` published (and, for the others, at the versions
/// the pointer named before).
pub async fn write(
    ctx: &datafusion::prelude::SessionContext,
    runs: &Url,
    run_id: &str,
    pipeline: &str,
    published: &[PublishReport],
) -> Result<Pointer> {
    let url = location(runs);
    let before = read(ctx, runs).await?;
    let mut tables = before
        .as_ref()
        .map(|(p, _)| p.tables.clone())
        .unwrap_or_default();
    for p in published {
        tables.insert(
            p.table.clone(),
            PointerTable {
                url: p.url.clone(),
                version: p.version,
                run_id: run_id.to_string(),
            },
        );
    }
    let pointer = Pointer {
        pointer_version: VERSION,
        run_id: run_id.to_string(),
        pipeline: pipeline.to_string(),
        published_at: Utc::now(),
        tables,
    };
    let body = serde_json::to_vec_pretty(&pointer).expect("a pointer serializes");
    let store = storage::store_for(ctx, &url)?;
    let path = storage::store_path(&url)?;
    let mode = match before {
        Some((_, version)) => PutMode::Update(version),
        None => PutMode::Create,
    };
    let conditional = store
        .put_opts(&path, body.clone().into(), PutOptions::from(mode))
        .await;
    let result = match conditional {
        // Local files have no conditional update; a rename replaces the file atomically.
        Err(object_store::Error::NotImplemented { .. }) => store
            .put_opts(&path, body.into(), PutOptions::from(PutMode::Overwrite))
            .await
            .map(|_| ()),
        other => other.map(|_| ()),
    };
    match result {
        Ok(()) => Ok(pointer),
        // Refused: maybe this very write, applied by a first try whose answer was lost.
        Err(
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. },
        ) if read(ctx, runs)
            .await?
            .is_some_and(|(now, _)| now == pointer) =>
        {
            Ok(pointer)
        }
        Err(
            e @ (object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }),
        ) => Err(Error::Storage {
            location: url.to_string(),
            message: "another run replaced the publish pointer while this one held the lease; \
                      the tables are committed, the pointer names the other run"
                .into(),
            source: Some(e),
        }),
        Err(e) => Err(Error::Storage {
            location: url.to_string(),
            message: "cannot write the publish pointer; the tables are committed, the pointer \
                      still names the run before"
                .into(),
            source: Some(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(table: &str, version: u64) -> PublishReport {
        PublishReport {
            table: table.into(),
            url: format!("file:///out/{table}"),
            previous_version: version.checked_sub(1),
            version,
            rows: 1,
        }
    }

    #[tokio::test]
    async fn a_pointer_keeps_the_tables_a_run_did_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Url::from_directory_path(dir.path()).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        assert!(read(&ctx, &runs).await.unwrap().is_none());
        write(&ctx, &runs, "r1", "p", &[report("a", 0), report("b", 0)])
            .await
            .unwrap();
        let second = write(&ctx, &runs, "r2", "p", &[report("a", 1)])
            .await
            .unwrap();
        let (read_back, _) = read(&ctx, &runs).await.unwrap().unwrap();
        assert_eq!(read_back, second);
        assert_eq!(second.run_id, "r2");
        assert_eq!(
            (
                second.tables["a"].version,
                second.tables["a"].run_id.as_str()
            ),
            (1, "r2")
        );
        assert_eq!(
            (
                second.tables["b"].version,
                second.tables["b"].run_id.as_str()
            ),
            (0, "r1")
        );
    }
}
