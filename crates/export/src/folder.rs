//! Finishing an export folder: files written under a temporary prefix are moved into the
//! folder, and a `_SUCCESS` manifest is written last. Sensors key on `_SUCCESS`, so it is
//! removed first when a folder is replaced: a folder never looks finished while its files
//! change.

use object_store::{ObjectStoreExt as _, PutPayload};
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::{Error, storage};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::fmt::Write as _;
use url::Url;

/// One file of a finished folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file's name in the folder.
    pub path: String,
    /// Its rows (data rows; a CSV header is not one).
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

impl FileEntry {
    /// The entry of a file named `path` holding `bytes`.
    pub fn of(path: String, rows: u64, bytes: &[u8]) -> FileEntry {
        FileEntry {
            path,
            rows,
            bytes: bytes.len() as u64,
            sha256: hex(&sha2::Sha256::digest(bytes)),
        }
    }
}

/// `_SUCCESS`: what a finished folder holds, in the spirit of Hadoop's manifest committer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Success {
    /// The layout (`segflow.export.files/1`).
    pub name: String,
    /// Always true: a folder is only finished once.
    pub success: bool,
    /// What wrote it.
    pub committer: String,
    /// When the folder was finished: milliseconds since the epoch, and as text.
    pub timestamp: i64,
    /// The same instant, RFC 3339.
    pub date: String,
    /// The run that wrote it.
    #[serde(rename = "jobId")]
    pub job_id: String,
    /// The files' URLs, as Hadoop's committers list them.
    pub filenames: Vec<String>,
    /// The published table the files come from.
    pub table: String,
    /// The folder's day.
    pub as_of: String,
    /// The files' format (`parquet`, `csv`, `hubspot`, ...).
    pub format: String,
    /// Rows in all the files.
    pub rows: u64,
    /// Bytes of all the files.
    pub bytes: u64,
    /// The published table's version the files copy.
    pub source: Source,
    /// Each file.
    pub files: Vec<FileEntry>,
    /// What else the export says (a CRM export's mode and skipped rows).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The Delta table and version an export copies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    /// The table's location.
    pub url: String,
    /// Its Delta version.
    pub version: u64,
    /// The run that committed that version.
    pub run_id: String,
}

impl Success {
    /// The manifest of `files` in `folder`, copied from `table`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        run_id: &str,
        folder: &Url,
        table: &str,
        as_of: chrono::NaiveDate,
        format: &str,
        source: &crate::published::Table,
        files: &[(Url, FileEntry)],
    ) -> Success {
        let now = chrono::Utc::now();
        Success {
            name: name.into(),
            success: true,
            committer: format!("segflow {}", env!("CARGO_PKG_VERSION")),
            timestamp: now.timestamp_millis(),
            date: now.to_rfc3339(),
            job_id: run_id.into(),
            filenames: files
                .iter()
                .map(|(_, e)| storage::join(folder, &e.path).to_string())
                .collect(),
            table: table.into(),
            as_of: as_of.to_string(),
            format: format.into(),
            rows: files.iter().map(|(_, e)| e.rows).sum(),
            bytes: files.iter().map(|(_, e)| e.bytes).sum(),
            source: Source {
                url: source.url.to_string(),
                version: source.version,
                run_id: source.run_id.clone(),
            },
            files: files.iter().map(|(_, e)| e.clone()).collect(),
            details: serde_json::Map::new(),
        }
    }
}

/// The name of the manifest that finishes a folder.
pub const SUCCESS: &str = "_SUCCESS";

/// Replaces the contents of `folder` with `files` (each a staged file's URL and the entry it
/// takes in the folder), then writes `manifest` as `_SUCCESS`.
pub async fn commit(
    ctx: &SessionContext,
    folder: &Url,
    files: &[(Url, FileEntry)],
    manifest: &impl Serialize,
) -> segflow_core::Result<()> {
    let success_url = storage::join(folder, SUCCESS);
    let store = storage::store_for(ctx, &success_url)?;
    let success_path = storage::store_path(&success_url)?;
    match store.delete(&success_path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(fail(&success_url, "cannot remove the old _SUCCESS", e)),
    }
    storage::delete_prefix(ctx, folder).await?;
    for (from, entry) in files {
        let to = storage::join(folder, &entry.path);
        store
            .rename(&storage::store_path(from)?, &storage::store_path(&to)?)
            .await
            .map_err(|e| fail(&to, "cannot move an export file into place", e))?;
    }
    let body = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    store
        .put(&success_path, PutPayload::from(body))
        .await
        .map_err(|e| fail(&success_url, "cannot write _SUCCESS", e))?;
    Ok(())
}

/// Writes `bytes` at `url`.
pub async fn put(ctx: &SessionContext, url: &Url, bytes: Vec<u8>) -> segflow_core::Result<()> {
    let store = storage::store_for(ctx, url)?;
    store
        .put(&storage::store_path(url)?, PutPayload::from(bytes))
        .await
        .map_err(|e| fail(url, "cannot write an export file", e))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A store error at `url`.
pub fn fail(url: &Url, message: &str, e: object_store::Error) -> Error {
    Error::Storage {
        location: url.to_string(),
        message: message.to_string(),
        source: Some(e),
    }
}
