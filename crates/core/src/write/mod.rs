//! Writing a stage's output where the rows are: a plan node that writes each partition's rows
//! as files and yields one row per file written.
//!
//! ```text
//!  WriteFiles (logical) ──planned by──> WriteExec: per input partition, its rows ──> files
//!        │                                   │     (a run table's Parquet files, or a Delta
//!        │                                   │      table's data files and their Add actions)
//!        └── input plan                      └──> one row per file: target, URL, rows, bytes,
//!                                                 Add action (JSON), the worker that wrote it
//! ```
//!
//! On the embedded engine the node runs in this process, one task per partition. On a
//! distributed engine (Ballista) the node travels with its input plan to the executors, each
//! task writes its partition's files there, and only the file rows come back. Either way the
//! caller learns exactly which files make up the output: a run table is registered over those
//! files, and a Delta table commits exactly their Add actions. A task that failed or was
//! retried leaves files no result row names; nothing reads them, and `vacuum` deletes them
//! from a Delta table's directory. Names are unique per attempt (a random suffix per
//! execution), so a retried task never overwrites what another attempt wrote.
//!
//! DataFusion's own `DataSinkExec` writes from a single task and yields a count only, which is
//! why segflow has this node.

mod exec;
mod node;
mod sink;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::{
    Array, AsArray, RecordBatch, StringArray, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use serde::{Deserialize, Serialize};
use url::Url;

pub use exec::WriteExec;
pub use node::{SegflowQueryPlanner, WriteFiles, WritePlanner};

use crate::error::{Error, Result};

/// What one output of a write is: its name, the input columns it keeps (in order), and where
/// its files go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct WriteTarget {
    /// The run table's name, for messages.
    pub table: String,
    /// The input's columns this output keeps, by name, in this order.
    pub columns: Vec<String>,
    pub sink: SinkSpec,
}

/// Where a target's files go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub enum SinkSpec {
    /// A run table: Parquet files under this directory, written for speed (see
    /// [`sink::run_table_properties`]).
    RunTable { dir: Url },
    /// The data files of the next version of the Delta table at `table`, partitioned by these
    /// columns; the files hold the rows in Delta's Arrow types.
    Delta {
        table: Url,
        partition_by: Vec<String>,
    },
}

/// A write: one target, or two that one boolean column splits the rows between (its true
/// rows to the first, false or null to the second).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct WriteSpec {
    pub targets: Vec<WriteTarget>,
    pub split_by: Option<String>,
}

/// Sees the first target's rows on their way to their files, with every input column.
pub type Observe = Arc<dyn Fn(&RecordBatch) -> Result<()> + Send + Sync>;

/// What a write does in this process only, when it runs here: counts rows for progress and
/// shows the first target's rows to an observer. A plan that runs elsewhere loses them (they
/// are not data), which [`Written::in_process`] tells the caller.
#[derive(Default)]
pub struct LocalHooks {
    /// Rows written so far, per target.
    pub rows: Vec<Arc<AtomicU64>>,
    pub observe: Option<Observe>,
}

impl std::fmt::Debug for LocalHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHooks")
            .field("targets", &self.rows.len())
            .field("observe", &self.observe.is_some())
            .finish()
    }
}

/// One file a write produced.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub url: Url,
    pub rows: u64,
    pub bytes: u64,
    /// The file's Delta Add action, for a Delta target.
    pub add: Option<deltalake::kernel::Add>,
    /// The process that wrote it ([`worker`]).
    pub worker: String,
}

/// What a write produced, per target, and where it ran.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub files: Vec<Vec<WrittenFile>>,
    /// The plan ran in this process, so the [`LocalHooks`] saw every row.
    pub in_process: bool,
}

/// The schema of a write's result: one row per file.
pub fn result_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("target", DataType::UInt32, false),
                Field::new("file", DataType::Utf8, false),
                Field::new("rows", DataType::UInt64, false),
                Field::new("bytes", DataType::UInt64, false),
                Field::new("add", DataType::Utf8, true),
                Field::new("worker", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// The name this process writes its files under, in results and manifests: `local` for the
/// embedded engine, an executor's id on a cluster ([`set_worker`]).
pub fn worker() -> &'static str {
    WORKER.get().map(String::as_str).unwrap_or("local")
}

/// Names this process in write results; an executor calls it once at start-up.
pub fn set_worker(name: String) {
    let _ = WORKER.set(name);
}

static WORKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Rows for `files` written for target `target`, as a result batch.
fn result_batch(target: usize, files: &[WrittenFile]) -> arrow::error::Result<RecordBatch> {
    let mut t = UInt32Builder::new();
    let mut url = StringBuilder::new();
    let mut rows = UInt64Builder::new();
    let mut bytes = UInt64Builder::new();
    let mut add = StringBuilder::new();
    let mut worker = StringBuilder::new();
    for f in files {
        t.append_value(target as u32);
        url.append_value(f.url.as_str());
        rows.append_value(f.rows);
        bytes.append_value(f.bytes);
        match &f.add {
            Some(a) => add.append_value(
                serde_json::to_string(a)
                    .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))?,
            ),
            None => add.append_null(),
        }
        worker.append_value(&f.worker);
    }
    RecordBatch::try_new(
        result_schema(),
        vec![
            Arc::new(t.finish()),
            Arc::new(url.finish()),
            Arc::new(rows.finish()),
            Arc::new(bytes.finish()),
            Arc::new(add.finish()),
            Arc::new(worker.finish()),
        ],
    )
}

/// The files in result batches, per target (of `targets`).
pub fn parse_results(batches: &[RecordBatch], targets: usize) -> Result<Vec<Vec<WrittenFile>>> {
    let bad = |m: String| Error::Internal(format!("reading a write's result: {m}"));
    let mut out = vec![Vec::new(); targets];
    for b in batches {
        if b.schema().fields() != result_schema().fields() {
            return Err(bad(format!("unexpected columns {:?}", b.schema())));
        }
        let target = b.column(0).as_primitive::<UInt32Type>();
        let file: &StringArray = b.column(1).as_string();
        let rows = b.column(2).as_primitive::<UInt64Type>();
        let bytes = b.column(3).as_primitive::<UInt64Type>();
        let add: &StringArray = b.column(4).as_string();
        let worker: &StringArray = b.column(5).as_string();
        for i in 0..b.num_rows() {
            let t = target.value(i) as usize;
            let files = out
                .get_mut(t)
                .ok_or_else(|| bad(format!("target {t} of {targets}")))?;
            let url = Url::parse(file.value(i)).map_err(|e| bad(e.to_string()))?;
            let add = if add.is_null(i) {
                None
            } else {
                Some(serde_json::from_str(add.value(i)).map_err(|e| bad(e.to_string()))?)
            };
            files.push(WrittenFile {
                url,
                rows: rows.value(i),
                bytes: bytes.value(i),
                add,
                worker: worker.value(i).to_string(),
            });
        }
    }
    // The order tasks finish in does not change a table; sorted, the registered file lists,
    // the manifest and the commits are the same on every run.
    for files in &mut out {
        files.sort_by(|a, b| a.url.as_str().cmp(b.url.as_str()));
        // A file named twice would be read twice: its rows duplicated in the table.
        if let Some(w) = files.windows(2).find(|w| w[0].url == w[1].url) {
            return Err(bad(format!(
                "file {} is named twice (by {} and {})",
                w[0].url, w[0].worker, w[1].worker
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
