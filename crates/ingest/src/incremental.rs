//! Incremental loads: which source files a staging table already holds, and its rows.
//!
//! The ledger (file URL -> size and ETag) is written into the info of the same Delta commit
//! that adds the files' rows, so the two can never disagree: a run that fails before its
//! commit leaves both as they were, and a rerun sees exactly what is published. A file whose
//! size or ETag changed is read again and its old rows are replaced in that one commit
//! (replaceWhere on `source_file`); an unchanged file is not read at all.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use segflow_core::datafusion::prelude::DataFrame;
use segflow_core::stage::StageContext;
use segflow_core::storage::FileEntry;
use segflow_core::{Result, publish};
use serde::{Deserialize, Serialize};
use url::Url;

/// The commit-info key holding the ledger.
pub const LEDGER_KEY: &str = "segflow.ingest_ledger";

/// The staging column that says which source file a row came from.
pub const SOURCE_FILE: &str = "source_file";

/// What the ledger remembers of one ingested file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Size in bytes.
    pub size: u64,
    /// The store's ETag (local files: derived from the modification time and size).
    pub e_tag: Option<String>,
}

impl From<&FileEntry> for LedgerEntry {
    fn from(f: &FileEntry) -> Self {
        LedgerEntry {
            size: f.size,
            e_tag: f.e_tag.clone(),
        }
    }
}

/// File URL -> what was ingested from it.
pub type Ledger = BTreeMap<String, LedgerEntry>;

/// The published staging table an incremental load builds on.
pub struct Published {
    /// Files its rows came from.
    pub ledger: Ledger,
    /// Its rows, with `source_file` and any partition columns.
    pub rows: DataFrame,
}

/// The staging table at `url` and its ledger, or `None` when there is nothing to build on:
/// no table yet, or a table without a ledger (written by a full load of another tool), which
/// the caller then rebuilds.
pub async fn published(cx: &StageContext<'_>, url: &Url) -> Result<Option<Published>> {
    if !publish::is_table(cx.ctx, url).await? {
        return Ok(None);
    }
    let table = publish::open_table(cx.ctx, url).await?;
    let fail = |e: segflow_core::deltalake::DeltaTableError| segflow_core::Error::Storage {
        location: url.to_string(),
        message: format!("cannot read the Delta table's history: {e}"),
        source: None,
    };
    // Newest commit first; the first one with a ledger is the current ledger.
    let mut history = table.history(None);
    let mut ledger = None;
    while let Some(commit) = history.try_next().await.map_err(fail)? {
        if let Some(value) = commit.info.get(LEDGER_KEY) {
            ledger = Some(serde_json::from_value::<Ledger>(value.clone()).map_err(|e| {
                segflow_core::Error::Storage {
                    location: url.to_string(),
                    message: format!(
                        "the ingest ledger in the table's history is unreadable ({e}); rerun with --full-refresh"
                    ),
                    source: None,
                }
            })?);
            break;
        }
    }
    drop(history);
    let Some(ledger) = ledger else {
        cx.warn(&format!(
            "{url} has no ingest ledger (not written by an incremental ingest); rebuilding it from every input file"
        ));
        return Ok(None);
    };
    let rows = publish::rows(cx.ctx, &table, url).await?;
    Ok(Some(Published { ledger, rows }))
}

/// Splits `files` into those to read (new, or changed since the ledger) and the number left
/// alone because the ledger already has them as they are.
pub fn to_read<'a>(files: &'a [FileEntry], ledger: &Ledger) -> (Vec<&'a FileEntry>, usize) {
    let read: Vec<&FileEntry> = files
        .iter()
        .filter(|f| ledger.get(f.url.as_str()) != Some(&LedgerEntry::from(*f)))
        .collect();
    let skipped = files.len() - read.len();
    (read, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64, tag: &str) -> FileEntry {
        FileEntry {
            url: Url::parse(&format!("s3://b/{name}")).unwrap(),
            size,
            e_tag: Some(tag.into()),
        }
    }

    #[test]
    fn only_new_and_changed_files_are_read() {
        let files = vec![file("a", 1, "x"), file("b", 2, "y"), file("c", 3, "z")];
        let mut ledger = Ledger::new();
        ledger.insert("s3://b/a".into(), LedgerEntry::from(&files[0]));
        ledger.insert("s3://b/b".into(), LedgerEntry::from(&file("b", 2, "old")));
        let (read, skipped) = to_read(&files, &ledger);
        let names: Vec<&str> = read.iter().map(|f| f.url.path()).collect();
        assert_eq!(names, ["/b", "/c"]);
        assert_eq!(skipped, 1);
    }
}
